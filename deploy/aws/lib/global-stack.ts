/**
 * The global edge, deployed once in us-east-1 (where CloudFront's certificates and WAF live):
 * DNS, the CDN for the web front, the edge WAF, and latency-based routing of the External
 * API to the regional cells with health checks.
 *
 * The cells are addressed only by names derived from the configuration
 * (`<region>.api.<domain>`, which each regional stack publishes itself), never by a
 * CloudFormation reference, so this stack and the regional ones deploy independently.
 */
import { CfnOutput, Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as cloudfront from 'aws-cdk-lib/aws-cloudfront';
import * as origins from 'aws-cdk-lib/aws-cloudfront-origins';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as route53 from 'aws-cdk-lib/aws-route53';
import * as targets from 'aws-cdk-lib/aws-route53-targets';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { accessLogBucket, cmk, logsKey, secureBucket } from './common';
import { GlobalConfig } from './config';
import { SecurityBaseline } from './security';
import { skipCheckov, skipNag } from './suppress';
import { webAcl } from './waf';

export interface GlobalStackProps extends StackProps {
  readonly config: GlobalConfig;
}

export class GlobalStack extends Stack {
  readonly distribution: cloudfront.Distribution;

  constructor(scope: Construct, id: string, props: GlobalStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const zone = route53.HostedZone.fromHostedZoneAttributes(this, 'Zone', { hostedZoneId: cfg.hostedZoneId, zoneName: cfg.domainName });
    const apiName = `api.${cfg.domainName}`;

    const lk = logsKey(this);
    const accessLogs = accessLogBucket(this, 'AccessLogs', cfg.logRetentionDays);
    new SecurityBaseline(this, 'Security', { logsKey: lk, accessLogs, retentionDays: cfg.logRetentionDays, recordGlobal: true, accountServices: cfg.accountSecurityServices });

    const alarmKey = cmk(this, 'AlarmTopicKey', 'Snakepay global alarm notifications');
    const alarms = new sns.Topic(this, 'Alarms', { masterKey: alarmKey, enforceSSL: true });
    // CloudWatch alarms publish to the encrypted topic.
    alarmKey.grant(new iam.ServicePrincipal('cloudwatch.amazonaws.com'), 'kms:Decrypt', 'kms:GenerateDataKey*');

    // The web front: static assets in a private bucket, readable only by this distribution (OAC).
    const webKey = cmk(this, 'WebBucketKey', 'Snakepay web assets bucket');
    const webBucket = secureBucket(this, 'WebBucket', webKey, accessLogs, 'web');

    const cert = new acm.Certificate(this, 'EdgeCert', {
      domainName: cfg.domainName,
      subjectAlternativeNames: [`www.${cfg.domainName}`],
      validation: acm.CertificateValidation.fromDns(zone),
    });

    const acl = webAcl(this, 'EdgeAcl', { scope: 'CLOUDFRONT', ratePer5Min: cfg.wafRateLimitPer5Min, logsKey: lk, retentionDays: cfg.logRetentionDays });

    // Dynamic web routes (hosted checkout pages) go to the web service in the nearest healthy cell.
    const dynamicOrigin = new origins.HttpOrigin(apiName, {
      protocolPolicy: cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
      originSslProtocols: [cloudfront.OriginSslPolicy.TLS_V1_2],
    });
    this.distribution = new cloudfront.Distribution(this, 'Cdn', {
      comment: 'Snakepay web front',
      domainNames: [cfg.domainName, `www.${cfg.domainName}`],
      certificate: cert,
      minimumProtocolVersion: cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
      httpVersion: cloudfront.HttpVersion.HTTP2_AND_3,
      defaultRootObject: 'index.html',
      webAclId: acl.attrArn,
      enableLogging: true,
      logBucket: accessLogs,
      logFilePrefix: 'cloudfront/',
      defaultBehavior: {
        origin: origins.S3BucketOrigin.withOriginAccessControl(webBucket),
        viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
        responseHeadersPolicy: cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
        cachePolicy: cloudfront.CachePolicy.CACHING_OPTIMIZED,
      },
      additionalBehaviors: {
        '/checkout/*': {
          origin: dynamicOrigin,
          viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
          allowedMethods: cloudfront.AllowedMethods.ALLOW_ALL,
          cachePolicy: cloudfront.CachePolicy.CACHING_DISABLED,
          originRequestPolicy: cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
          responseHeadersPolicy: cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
        },
      },
    });
    skipNag(this.distribution, [
      { id: 'AwsSolutions-CFR1', reason: 'Snakepay serves merchants and shoppers globally; sanctioned-country blocking is enforced by the API (KYC), not by CDN geo rules.' },
    ]);
    skipCheckov(this.distribution, 'CKV_AWS_374', 'Snakepay serves merchants and shoppers globally; sanctioned-country blocking is enforced by the API (KYC), not by CDN geo rules.');
    skipCheckov(this.distribution, 'CKV_AWS_310', 'The dynamic origin is the latency-routed API name, which already fails over between cells through Route 53 health checks.');

    for (const name of [cfg.domainName, `www.${cfg.domainName}`]) {
      const target = route53.RecordTarget.fromAlias(new targets.CloudFrontTarget(this.distribution));
      new route53.ARecord(this, `Web4${name}`, { zone, recordName: name, target });
      new route53.AaaaRecord(this, `Web6${name}`, { zone, recordName: name, target });
    }

    // Latency-based routing of the External API: one record per cell, withdrawn while its
    // health check (the External API's readiness through that cell's API Gateway) fails.
    for (const r of cfg.regions) {
      const regionalName = `${r.region}.api.${cfg.domainName}`;
      const check = new route53.HealthCheck(this, `Health-${r.region}`, {
        type: route53.HealthCheckType.HTTPS,
        fqdn: regionalName,
        port: 443,
        resourcePath: '/readyz',
        enableSNI: true,
        measureLatency: true,
        requestInterval: Duration.seconds(10),
        failureThreshold: 3,
      });
      new route53.CnameRecord(this, `Api-${r.region}`, {
        zone,
        recordName: apiName,
        domainName: regionalName,
        region: r.region,
        setIdentifier: r.region,
        healthCheck: check,
        ttl: Duration.seconds(60),
      });
      const alarm = new cloudwatch.Alarm(this, `HealthAlarm-${r.region}`, {
        alarmDescription: `External API in ${r.region} is failing its Route 53 health check; traffic is being routed to other cells.`,
        metric: new cloudwatch.Metric({
          namespace: 'AWS/Route53',
          metricName: 'HealthCheckStatus',
          dimensionsMap: { HealthCheckId: check.healthCheckId },
          statistic: 'Minimum',
          period: Duration.minutes(1),
        }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 2,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      alarm.addAlarmAction(new cwActions.SnsAction(alarms));
    }

    new CfnOutput(this, 'WebBucketName', { value: webBucket.bucketName, description: 'Upload web/dist here (aws s3 sync), then invalidate the distribution.' });
    new CfnOutput(this, 'DistributionId', { value: this.distribution.distributionId });
  }
}
