/**
 * One regional cell: everything Snakepay runs in one region, with no reference to any other
 * region (cells are independent, DESIGN.md §1). Layout of this file, top to bottom:
 *
 * 1. keys and secrets      4. data: Aurora clusters (control + shards), Redis, RabbitMQ
 * 2. network               5. compute: ECS services behind an NLB, API Gateway (public + private)
 * 3. edge of the cell      6. security baseline and observability (alarms, dashboard)
 */
import { CfnOutput, Duration, Fn, RemovalPolicy, Size, Stack, StackProps } from 'aws-cdk-lib';
import * as amazonmq from 'aws-cdk-lib/aws-amazonmq';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elasticache from 'aws-cdk-lib/aws-elasticache';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as route53 from 'aws-cdk-lib/aws-route53';
import * as targets from 'aws-cdk-lib/aws-route53-targets';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { accessLogBucket, cmk, logGroup, logsKey } from './common';
import { GlobalConfig, RegionConfig, SERVICES, ServiceName } from './config';
import { PUBLIC_CACHE_PREFIX, repositoryName } from './registry-stack';
import { SecurityBaseline } from './security';
import { skipCheckov, skipNag } from './suppress';
import { webAcl } from './waf';

export interface RegionStackProps extends StackProps {
  readonly config: GlobalConfig;
  readonly region: RegionConfig;
}

/** Container ports every service uses (see the Rust services' defaults). */
export const HTTP_PORT = 8080;
export const METRICS_PORT = 9090;
const PG_PORT = 5432;
const REDIS_PORT = 6379;
const AMQPS_PORT = 5671;
const HTTPS_PORT = 443;

/** The OpenTelemetry collector sidecar, pulled through this region's ECR pull-through cache. */
const OTEL_COLLECTOR = 'aws-observability/aws-otel-collector:v0.43.3';

/** NLB listener port per service reachable through API Gateway. */
const LISTENER_PORT: Partial<Record<ServiceName, number>> = { 'external-api': 443, 'web': 8443, 'internal-api': 9443 };

/** Which data stores and secrets each service may use: the least-privilege matrix. */
const ACCESS: Record<ServiceName | 'admin', { db: boolean; redis: boolean; broker: boolean; cardKey: 'none' | 'encrypt' | 'decrypt' | 'rewrap' }> = {
  'web': { db: false, redis: false, broker: false, cardKey: 'none' },
  'external-api': { db: true, redis: true, broker: true, cardKey: 'encrypt' },
  'internal-api': { db: true, redis: true, broker: true, cardKey: 'none' },
  'integration': { db: true, redis: true, broker: true, cardKey: 'decrypt' },
  'admin': { db: true, redis: false, broker: false, cardKey: 'rewrap' },
};

export class RegionStack extends Stack {
  readonly vpc: ec2.Vpc;
  readonly shardClusters: rds.DatabaseCluster[] = [];
  readonly controlCluster: rds.DatabaseCluster;
  readonly services: Partial<Record<ServiceName, ecs.FargateService>> = {};
  readonly taskRoles: Partial<Record<ServiceName | 'admin', iam.Role>> = {};
  readonly natEips: ec2.CfnEIP[] = [];
  readonly cardDataKey: kms.Key;

  constructor(scope: Construct, id: string, props: RegionStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    const r = props.region;
    const retention = cfg.logRetentionDays;
    const prefix = `snakepay-${r.code}`;

    // ---- 1. keys and secrets -------------------------------------------------------------
    const lk = logsKey(this);
    const dataKey = cmk(this, 'DataKey', `Snakepay ${r.code}: Aurora, ElastiCache and their backups`);
    // The card vault's key-encryption key. Its key policy does not delegate cryptographic use
    // to IAM: the account can administer the key, but only the roles named below (added where
    // each task role is made) can use it, so no IAM policy elsewhere can grant kms:Decrypt.
    this.cardDataKey = new kms.Key(this, 'CardDataKey', {
      description: `Snakepay ${r.code}: card vault key-encryption key (only the integration service decrypts)`,
      enableKeyRotation: true,
      rotationPeriod: Duration.days(365),
      pendingWindow: Duration.days(30),
      removalPolicy: RemovalPolicy.RETAIN,
      policy: new iam.PolicyDocument({
        statements: [new iam.PolicyStatement({
          sid: 'AccountAdministersButCannotUse',
          principals: [new iam.AccountRootPrincipal()],
          actions: [
            'kms:Create*', 'kms:Describe*', 'kms:Enable*', 'kms:List*', 'kms:Put*', 'kms:Update*', 'kms:Revoke*',
            'kms:Disable*', 'kms:Get*', 'kms:Delete*', 'kms:TagResource', 'kms:UntagResource',
            'kms:ScheduleKeyDeletion', 'kms:CancelKeyDeletion', 'kms:RotateKeyOnDemand',
          ],
          resources: ['*'],
        })],
      }),
    });
    const secretsKey = cmk(this, 'SecretsKey', `Snakepay ${r.code}: Secrets Manager`);
    const opsKey = cmk(this, 'OpsKey', `Snakepay ${r.code}: alarm notifications`);
    opsKey.grant(new iam.ServicePrincipal('cloudwatch.amazonaws.com'), 'kms:Decrypt', 'kms:GenerateDataKey*');

    const appSecret = (sid: string, description: string, template?: Record<string, string>) => {
      const s = new secretsmanager.Secret(this, sid, {
        description,
        encryptionKey: secretsKey,
        generateSecretString: template
          ? { secretStringTemplate: JSON.stringify(template), generateStringKey: 'password', excludePunctuation: true, passwordLength: 48 }
          : { excludePunctuation: true, passwordLength: 64 },
        removalPolicy: RemovalPolicy.RETAIN,
      });
      skipNag(s, [
        { id: 'AwsSolutions-SMG4', reason: 'Application keys are rotated by `snakepay-admin keys rotate` (dual-key window), which Secrets Manager rotation cannot drive; see docs/architecture.md, runbook "Rotating keys".' },
        { id: 'PCI.DSS.321-SecretsManagerRotationEnabled', reason: 'Application keys are rotated by `snakepay-admin keys rotate` (dual-key window); see docs/architecture.md, runbook "Rotating keys".' },
      ]);
      skipCheckov(s, 'CKV2_AWS_57', 'Application keys are rotated by `snakepay-admin keys rotate` (dual-key window); see docs/architecture.md.');
      return s;
    };
    const redisSecret = appSecret('RedisAuth', 'Redis AUTH token');
    const brokerSecret = appSecret('BrokerUser', 'RabbitMQ application user', { username: 'snakepay' });
    const fingerprintSecret = appSecret('VaultFingerprintKey', 'Card vault HMAC fingerprint key');
    const apiKeyPepper = appSecret('ApiKeyPepper', 'Keyed hash secret for merchant API keys');
    const staffTokenKey = appSecret('StaffTokenKey', 'Signing key for staff tokens of the Internal API');

    // ---- 2. network ----------------------------------------------------------------------
    const flowLogs = logGroup(this, 'FlowLogs', lk, retention);
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(r.vpcCidr),
      maxAzs: 3,
      natGateways: 3,
      restrictDefaultSecurityGroup: true,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24, mapPublicIpOnLaunch: false },
        { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
        { name: 'isolated', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      flowLogs: { all: { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs), trafficType: ec2.FlowLogTrafficType.ALL } },
    });
    const vpc = this.vpc;
    for (const [i, subnet] of vpc.publicSubnets.entries()) {
      const eip = subnet.node.findChild('EIP') as ec2.CfnEIP;
      this.natEips.push(eip);
      new CfnOutput(this, `NatEgressIp${i + 1}`, { value: eip.ref, description: `Processor allow-list: NAT egress IP in ${subnet.availabilityZone}` });
    }
    const privateSubnets = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    const isolatedSubnets = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };

    // AWS APIs are reached through endpoints, so no service but integration needs the internet.
    const endpointSg = new ec2.SecurityGroup(this, 'EndpointSg', { vpc, description: 'Interface VPC endpoints: HTTPS from the VPC', allowAllOutbound: false });
    endpointSg.addIngressRule(ec2.Peer.ipv4(r.vpcCidr), ec2.Port.tcp(HTTPS_PORT), 'HTTPS from inside the VPC');
    vpc.addGatewayEndpoint('S3', { service: ec2.GatewayVpcEndpointAwsService.S3 });
    const interfaceEndpoints: Record<string, ec2.InterfaceVpcEndpointAwsService> = {
      EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
      EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
      Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
      Monitoring: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
      SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      Kms: ec2.InterfaceVpcEndpointAwsService.KMS,
      Sts: ec2.InterfaceVpcEndpointAwsService.STS,
      XRay: ec2.InterfaceVpcEndpointAwsService.XRAY,
      ExecuteApi: ec2.InterfaceVpcEndpointAwsService.APIGATEWAY,
    };
    const endpoints: Record<string, ec2.InterfaceVpcEndpoint> = {};
    for (const [name, service] of Object.entries(interfaceEndpoints)) {
      endpoints[name] = vpc.addInterfaceEndpoint(name, { service, subnets: privateSubnets, securityGroups: [endpointSg], privateDnsEnabled: true, open: false });
    }

    // Security groups: one per service and per data store, no egress unless listed.
    const sg = (sid: string, description: string) => new ec2.SecurityGroup(this, sid, { vpc, description, allowAllOutbound: false });
    const dbSg = sg('DatabaseSg', 'Aurora PostgreSQL clusters');
    const redisSg = sg('RedisSg', 'ElastiCache Redis');
    const brokerSg = sg('BrokerSg', 'Amazon MQ for RabbitMQ');
    const taskSgs = {} as Record<ServiceName | 'admin', ec2.SecurityGroup>;
    for (const name of [...SERVICES, 'admin'] as const) {
      const s = sg(`${pascal(name)}Sg`, `ECS tasks of ${name}`);
      s.addEgressRule(endpointSg, ec2.Port.tcp(HTTPS_PORT), 'AWS APIs through interface endpoints');
      s.addEgressRule(ec2.Peer.prefixList(r.s3PrefixListId), ec2.Port.tcp(HTTPS_PORT), 'ECR image layers through the S3 gateway endpoint');
      const a = ACCESS[name];
      if (a.db) { s.addEgressRule(dbSg, ec2.Port.tcp(PG_PORT), 'PostgreSQL'); dbSg.addIngressRule(s, ec2.Port.tcp(PG_PORT), `PostgreSQL from ${name}`); }
      if (a.redis) { s.addEgressRule(redisSg, ec2.Port.tcp(REDIS_PORT), 'Redis (TLS)'); redisSg.addIngressRule(s, ec2.Port.tcp(REDIS_PORT), `Redis from ${name}`); }
      if (a.broker) { s.addEgressRule(brokerSg, ec2.Port.tcp(AMQPS_PORT), 'AMQPS'); brokerSg.addIngressRule(s, ec2.Port.tcp(AMQPS_PORT), `AMQPS from ${name}`); }
      taskSgs[name] = s;
    }
    // Only the integration service talks to the outside world, and only to the processors.
    for (const cidr of r.processorCidrs) {
      taskSgs['integration'].addEgressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(HTTPS_PORT), `Card processor ${cidr} through the NAT gateways`);
    }

    // ---- 3. edge of the cell: certificate and DNS name of this region's API ----------------
    const zone = route53.HostedZone.fromHostedZoneAttributes(this, 'Zone', { hostedZoneId: cfg.hostedZoneId, zoneName: cfg.domainName });
    const apiName = `api.${cfg.domainName}`;
    const regionalApiName = `${r.region}.api.${cfg.domainName}`;
    const nlbName = `nlb.${r.region}.api.${cfg.domainName}`;
    const cert = new acm.Certificate(this, 'ApiCert', {
      domainName: apiName,
      subjectAlternativeNames: [regionalApiName, nlbName],
      validation: acm.CertificateValidation.fromDns(zone),
    });

    // ---- 4. data --------------------------------------------------------------------------
    const dbSubnets = new rds.SubnetGroup(this, 'DbSubnets', { vpc, vpcSubnets: isolatedSubnets, description: 'Isolated subnets for Aurora', removalPolicy: RemovalPolicy.RETAIN });
    const dbParams = new rds.ParameterGroup(this, 'DbParams', {
      engine: rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_16_13 }),
      description: 'Snakepay: TLS only, statement and connection logging',
      parameters: {
        'rds.force_ssl': '1',
        'ssl_min_protocol_version': 'TLSv1.2',
        'log_connections': '1',
        'log_disconnections': '1',
        'log_min_duration_statement': '500',
        'shared_preload_libraries': 'pg_stat_statements',
      },
    });
    const monitoringRole = new iam.Role(this, 'DbMonitoringRole', {
      assumedBy: new iam.ServicePrincipal('monitoring.rds.amazonaws.com'),
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonRDSEnhancedMonitoringRole')],
    });
    skipNag(monitoringRole, [{
      id: 'AwsSolutions-IAM4',
      reason: 'AmazonRDSEnhancedMonitoringRole is the AWS-maintained policy RDS enhanced monitoring requires (logs:PutLogEvents on RDSOSMetrics only).',
      appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole'],
    }]);

    const makeCluster = (cid: string, identifier: string, sizing: typeof r.shardDb) => {
      // Pre-created so the exported PostgreSQL log is encrypted and expires (no custom resource).
      logGroup(this, `${cid}Logs`, lk, retention, `/aws/rds/cluster/${identifier}/postgresql`);
      const instance = (iid: string, tier: number) => rds.ClusterInstance.provisioned(iid, {
        instanceType: new ec2.InstanceType(sizing.instanceClass),
        publiclyAccessible: false,
        enablePerformanceInsights: true,
        performanceInsightEncryptionKey: dataKey,
        performanceInsightRetention: rds.PerformanceInsightRetention.MONTHS_1,
        promotionTier: tier,
        autoMinorVersionUpgrade: true,
      });
      const cluster = new rds.DatabaseCluster(this, cid, {
        clusterIdentifier: identifier,
        engine: rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_16_13 }),
        credentials: rds.Credentials.fromGeneratedSecret('snakepay_admin', { encryptionKey: secretsKey }),
        defaultDatabaseName: 'snakepay',
        writer: instance('writer', 0),
        readers: Array.from({ length: sizing.readers }, (_, i) => instance(`reader${i + 1}`, 1)),
        vpc,
        vpcSubnets: isolatedSubnets,
        subnetGroup: dbSubnets,
        securityGroups: [dbSg],
        parameterGroup: dbParams,
        storageEncrypted: true,
        storageEncryptionKey: dataKey,
        storageType: rds.DBClusterStorageType.AURORA_IOPT1,
        backup: { retention: Duration.days(cfg.backupRetentionDays), preferredWindow: '01:00-02:00' },
        preferredMaintenanceWindow: 'sun:03:00-sun:04:00',
        deletionProtection: true,
        removalPolicy: RemovalPolicy.SNAPSHOT,
        iamAuthentication: true,
        cloudwatchLogsExports: ['postgresql'],
        monitoringInterval: Duration.seconds(30),
        monitoringRole,
        copyTagsToSnapshot: true,
      });
      skipNag(cluster, [
        { id: 'AwsSolutions-RDS11', reason: 'A non-default port is obscurity, not a control: access is limited by security groups, TLS and IAM authentication.' },
        { id: 'AwsSolutions-SMG4', reason: 'The master secret is break-glass for migrations only (services use IAM auth); it is rotated by the runbook in docs/architecture.md.' },
        { id: 'PCI.DSS.321-SecretsManagerRotationEnabled', reason: 'The master secret is break-glass for migrations only (services use IAM auth); it is rotated by the runbook in docs/architecture.md.' },
      ]);
      skipCheckov(cluster.secret!, 'CKV2_AWS_57', 'The master secret is break-glass for migrations only (services use IAM auth); it is rotated by the runbook in docs/architecture.md.');
      return cluster;
    };
    // The control database is its own cluster, not shard 0: every request authenticates
    // against it, so a hot or failing shard must not take merchant authentication down with it,
    // and it is sized, upgraded and restored on its own.
    this.controlCluster = makeCluster('ControlDb', `${prefix}-control`, r.controlDb);
    for (let i = 0; i < r.shardCount; i++) this.shardClusters.push(makeCluster(`ShardDb${i}`, `${prefix}-shard-${i}`, r.shardDb));

    const redisSubnets = new elasticache.CfnSubnetGroup(this, 'RedisSubnets', {
      description: 'Isolated subnets for Redis',
      subnetIds: vpc.isolatedSubnets.map((s) => s.subnetId),
    });
    const redisLogs = logGroup(this, 'RedisLogs', lk, retention);
    const redis = new elasticache.CfnReplicationGroup(this, 'Redis', {
      replicationGroupDescription: `Snakepay ${r.code} cache and rate limits`,
      engine: 'redis',
      engineVersion: '7.1',
      cacheNodeType: r.redisNodeType,
      numCacheClusters: r.redisNodes,
      automaticFailoverEnabled: true,
      multiAzEnabled: true,
      atRestEncryptionEnabled: true,
      kmsKeyId: dataKey.keyArn,
      transitEncryptionEnabled: true,
      transitEncryptionMode: 'required',
      authToken: redisSecret.secretValue.unsafeUnwrap(), // a CloudFormation dynamic reference, never the value
      cacheSubnetGroupName: redisSubnets.ref,
      securityGroupIds: [redisSg.securityGroupId],
      port: REDIS_PORT,
      snapshotRetentionLimit: 7,
      snapshotWindow: '01:00-02:00',
      preferredMaintenanceWindow: 'sun:04:00-sun:05:00',
      autoMinorVersionUpgrade: true,
      logDeliveryConfigurations: [
        { destinationType: 'cloudwatch-logs', logFormat: 'json', logType: 'slow-log', destinationDetails: { cloudWatchLogsDetails: { logGroup: redisLogs.logGroupName } } },
        { destinationType: 'cloudwatch-logs', logFormat: 'json', logType: 'engine-log', destinationDetails: { cloudWatchLogsDetails: { logGroup: redisLogs.logGroupName } } },
      ],
    });
    skipNag(redis, [{ id: 'AwsSolutions-AEC5', reason: 'A non-default port is obscurity, not a control: access is limited by security groups, TLS and the AUTH token.' }]);

    // Amazon MQ requires this resource policy to publish broker logs to CloudWatch Logs.
    new logs.CfnResourcePolicy(this, 'BrokerLogsPolicy', {
      policyName: `${prefix}-amazonmq-logs`,
      policyDocument: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{
          Effect: 'Allow',
          Principal: { Service: 'mq.amazonaws.com' },
          Action: ['logs:CreateLogGroup', 'logs:CreateLogStream', 'logs:PutLogEvents'],
          Resource: `arn:${this.partition}:logs:${this.region}:${this.account}:log-group:/aws/amazonmq/*`,
          Condition: { StringEquals: { 'aws:SourceAccount': this.account } },
        }],
      }),
    });
    const broker = new amazonmq.CfnBroker(this, 'Broker', {
      brokerName: `${prefix}-broker`,
      engineType: 'RABBITMQ',
      engineVersion: '3.13',
      hostInstanceType: r.brokerInstanceType,
      deploymentMode: 'CLUSTER_MULTI_AZ',
      publiclyAccessible: false,
      autoMinorVersionUpgrade: true,
      subnetIds: vpc.isolatedSubnets.map((s) => s.subnetId),
      securityGroups: [brokerSg.securityGroupId],
      users: [{ username: 'snakepay', password: brokerSecret.secretValueFromJson('password').unsafeUnwrap() }],
      logs: { general: true },
      maintenanceWindowStartTime: { dayOfWeek: 'SUNDAY', timeOfDay: '05:00', timeZone: 'UTC' },
    });
    skipCheckov(broker, 'CKV_AWS_209', 'Amazon MQ for RabbitMQ encrypts at rest only with an AWS-owned key; customer-managed keys are an ActiveMQ-only option.');
    skipCheckov(broker, 'CKV_AWS_197', 'Audit logging is an ActiveMQ-only option; RabbitMQ brokers publish general logs, which are enabled.');
    const amqpsEndpoint = Fn.select(0, broker.attrAmqpEndpoints);
    const brokerHost = Fn.select(1, Fn.split('amqps://', amqpsEndpoint));

    // ---- 5. compute ------------------------------------------------------------------------
    const accessLogs = accessLogBucket(this, 'AccessLogs', retention);
    const cluster = new ecs.Cluster(this, 'Cluster', { vpc, containerInsightsV2: ecs.ContainerInsights.ENHANCED, enableFargateCapacityProviders: true });

    // The collector image comes through the registry stack's pull-through cache.
    const otelImage = `${this.account}.dkr.ecr.${this.region}.${this.urlSuffix}/${PUBLIC_CACHE_PREFIX}/${OTEL_COLLECTOR}`;

    const nlb = new elbv2.NetworkLoadBalancer(this, 'Nlb', {
      vpc,
      internetFacing: false,
      vpcSubnets: privateSubnets,
      crossZoneEnabled: true,
      deletionProtection: true,
    });
    nlb.logAccessLogs(accessLogs, 'nlb');
    new route53.ARecord(this, 'NlbRecord', { zone, recordName: nlbName, target: route53.RecordTarget.fromAlias(new targets.LoadBalancerTarget(nlb)) });

    const dbUrl = (c: rds.DatabaseCluster, user: string) => `postgres://${user}@${c.clusterEndpoint.hostname}:${PG_PORT}/snakepay?sslmode=verify-full`;
    const commonEnv = (user: string): Record<string, string> => ({
      SNAKEPAY_REGION__CODE: r.code,
      SNAKEPAY_REGION__NUMBER: String(r.number),
      SNAKEPAY_REGION__PUBLIC_API_URL: `https://${regionalApiName}`,
      // OTLP/HTTP (protobuf), what crates/telemetry exports (docs/observability.md).
      SNAKEPAY_TELEMETRY__OTLP_ENDPOINT: 'http://127.0.0.1:4318',
      SNAKEPAY_TELEMETRY__METRICS_ADDR: `0.0.0.0:${METRICS_PORT}`,
      SNAKEPAY_TELEMETRY__LOG_FORMAT: 'json',
      SNAKEPAY_DATABASE__CONTROL_URL: dbUrl(this.controlCluster, user),
      // A list in the config's value syntax: ["url0", "url1"], shard N at index N.
      SNAKEPAY_DATABASE__SHARD_URLS: `[${this.shardClusters.map((c) => `"${dbUrl(c, user)}"`).join(', ')}]`,
      SNAKEPAY_DATABASE__IAM_AUTH: 'true',
    });
    const otelConfig = [
      'receivers:',
      '  otlp: {protocols: {http: {endpoint: "127.0.0.1:4318"}}}',
      '  prometheus: {config: {scrape_configs: [{job_name: snakepay, scrape_interval: 30s, static_configs: [{targets: ["127.0.0.1:9090"]}]}]}}',
      'processors:',
      '  batch: {}',
      'exporters:',
      '  awsxray: {}',
      `  awsemf: {namespace: Snakepay, log_group_name: "/snakepay/${r.code}/metrics", dimension_rollup_option: NoDimensionRollup}`,
      'service:',
      '  pipelines:',
      '    traces: {receivers: [otlp], processors: [batch], exporters: [awsxray]}',
      '    metrics: {receivers: [prometheus, otlp], processors: [batch], exporters: [awsemf]}',
    ].join('\n');
    const metricsLogs = logGroup(this, 'MetricsLogs', lk, retention, `/snakepay/${r.code}/metrics`);

    const dbUserArn = (c: rds.DatabaseCluster, user: string) =>
      `arn:${this.partition}:rds-db:${this.region}:${this.account}:dbuser:${c.clusterResourceIdentifier}/${user}`;

    const taskDefs: ecs.FargateTaskDefinition[] = [];
    const taskDefinition = (name: ServiceName | 'admin', sizing: { cpu: number; memoryMiB: number }) => {
      const dbUser = `snakepay_${name.replace('-', '_')}`;
      const a = ACCESS[name];
      const role = new iam.Role(this, `${pascal(name)}TaskRole`, {
        assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
        description: `Snakepay ${name}: only what this service needs`,
      });
      this.taskRoles[name] = role;
      const td = new ecs.FargateTaskDefinition(this, `${pascal(name)}Task`, {
        cpu: sizing.cpu,
        memoryLimitMiB: sizing.memoryMiB,
        taskRole: role,
        runtimePlatform: { operatingSystemFamily: ecs.OperatingSystemFamily.LINUX, cpuArchitecture: ecs.CpuArchitecture.X86_64 },
      });
      const repo = ecr.Repository.fromRepositoryName(this, `${pascal(name)}Repo`, repositoryName(name));
      const env = commonEnv(dbUser);
      // Each service reads its listener from its own section, e.g. [external_api].
      env[`SNAKEPAY_${name.toUpperCase().replace(/-/g, '_')}__LISTEN_ADDR`] = `0.0.0.0:${HTTP_PORT}`;
      const secrets: Record<string, ecs.Secret> = {};
      if (a.redis) {
        env.SNAKEPAY_REDIS__URL = `rediss://${redis.attrPrimaryEndPointAddress}:${REDIS_PORT}`;
        secrets.SNAKEPAY_REDIS__PASSWORD = ecs.Secret.fromSecretsManager(redisSecret);
      }
      if (a.broker) {
        env.SNAKEPAY_BROKER__URL = `amqps://snakepay@${brokerHost}`;
        secrets.SNAKEPAY_BROKER__PASSWORD = ecs.Secret.fromSecretsManager(brokerSecret, 'password');
      }
      if (a.cardKey !== 'none') env.SNAKEPAY_VAULT__KMS_KEY_ARN = this.cardDataKey.keyArn;
      if (name === 'external-api' || name === 'integration') secrets.SNAKEPAY_VAULT__FINGERPRINT_KEY = ecs.Secret.fromSecretsManager(fingerprintSecret);
      if (name === 'external-api' || name === 'internal-api' || name === 'admin') secrets.SNAKEPAY_API_KEYS__HASH_SECRET_BASE64 = ecs.Secret.fromSecretsManager(apiKeyPepper);
      if (name === 'internal-api' || name === 'admin') secrets.SNAKEPAY_STAFF__TOKEN_KEY = ecs.Secret.fromSecretsManager(staffTokenKey);
      if (name === 'admin') {
        // Migrations create the per-service roles, so the one-off admin task holds the master secrets.
        secrets.SNAKEPAY_ADMIN__CONTROL_MASTER_SECRET = ecs.Secret.fromSecretsManager(this.controlCluster.secret!);
        this.shardClusters.forEach((c, i) => { secrets[`SNAKEPAY_ADMIN__SHARD_${i}_MASTER_SECRET`] = ecs.Secret.fromSecretsManager(c.secret!); });
      }
      if (name === 'web') {
        // The web front only renders pages and calls the External API.
        for (const k of Object.keys(env)) if (k.startsWith('SNAKEPAY_DATABASE__')) delete env[k];
        env.SNAKEPAY_WEB__API_BASE_URL = `https://${apiName}`;
      }
      const appLogs = logGroup(this, `${pascal(name)}Logs`, lk, retention);
      td.addContainer('app', {
        image: ecs.ContainerImage.fromEcrRepository(repo, cfg.imageTag),
        essential: true,
        readonlyRootFilesystem: true,
        user: '65532:65532',
        command: name === 'admin' ? ['migrate'] : undefined,
        portMappings: name === 'admin' ? [] : [{ containerPort: HTTP_PORT, name: 'http' }, { containerPort: METRICS_PORT, name: 'metrics' }],
        environment: env,
        secrets,
        logging: ecs.LogDrivers.awsLogs({ logGroup: appLogs, streamPrefix: name, mode: ecs.AwsLogDriverMode.NON_BLOCKING, maxBufferSize: Size.mebibytes(25) }),
        stopTimeout: Duration.seconds(30),
      });
      if (name !== 'admin') {
        const otelLogs = logGroup(this, `${pascal(name)}OtelLogs`, lk, retention);
        td.addContainer('otel-collector', {
          image: ecs.ContainerImage.fromRegistry(otelImage),
          essential: false,
          readonlyRootFilesystem: true,
          user: '10001:10001',
          memoryReservationMiB: 128,
          environment: { AOT_CONFIG_CONTENT: otelConfig },
          logging: ecs.LogDrivers.awsLogs({ logGroup: otelLogs, streamPrefix: 'otel' }),
        });
        role.addToPolicy(new iam.PolicyStatement({
          actions: ['xray:PutTraceSegments', 'xray:PutTelemetryRecords'],
          resources: ['*'],
        }));
        metricsLogs.grantWrite(role);
        td.obtainExecutionRole().addToPrincipalPolicy(new iam.PolicyStatement({
          actions: ['ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchCheckLayerAvailability', 'ecr:BatchImportUpstreamImage', 'ecr:CreateRepository'],
          resources: [`arn:${this.partition}:ecr:${this.region}:${this.account}:repository/${PUBLIC_CACHE_PREFIX}/aws-observability/*`],
        }));
      }
      if (a.db) {
        role.addToPolicy(new iam.PolicyStatement({
          actions: ['rds-db:connect'],
          resources: [this.controlCluster, ...this.shardClusters].map((c) => dbUserArn(c, dbUser)),
        }));
      }
      const cardActions = { none: [], encrypt: ['kms:GenerateDataKey', 'kms:Encrypt', 'kms:DescribeKey'], decrypt: ['kms:Decrypt', 'kms:DescribeKey'], rewrap: ['kms:ReEncryptFrom', 'kms:ReEncryptTo', 'kms:DescribeKey'] }[a.cardKey];
      if (cardActions.length > 0) {
        // Both sides: the key policy names the role (the key trusts no IAM policy), the role's policy names the key.
        this.cardDataKey.addToResourcePolicy(new iam.PolicyStatement({ sid: `Use${pascal(name)}`, principals: [role], actions: cardActions, resources: ['*'] }));
        role.addToPolicy(new iam.PolicyStatement({ actions: cardActions, resources: [this.cardDataKey.keyArn] }));
      }
      skipNag(td, [
        { id: 'AwsSolutions-ECS2', reason: 'Only non-secret configuration (endpoints, region code) is set as environment; secrets come from Secrets Manager.' },
      ]);
      taskDefs.push(td);
      return td;
    };

    // Admin: a one-off task (`snakepay-admin migrate`, `keys rotate`, ...), never a service.
    const adminTask = taskDefinition('admin', { cpu: 512, memoryMiB: 1024 });
    new CfnOutput(this, 'AdminTaskDefinition', { value: adminTask.taskDefinitionArn, description: 'Run with `aws ecs run-task` for migrations and key rotation' });
    new CfnOutput(this, 'AdminSecurityGroup', { value: taskSgs['admin'].securityGroupId });

    const targetGroups: Partial<Record<ServiceName, elbv2.NetworkTargetGroup>> = {};
    for (const name of SERVICES) {
      const sizing = r.services[name];
      const td = taskDefinition(name, sizing);
      const service = new ecs.FargateService(this, `${pascal(name)}Service`, {
        serviceName: name,
        cluster,
        taskDefinition: td,
        desiredCount: sizing.minTasks,
        minHealthyPercent: 100,
        maxHealthyPercent: 200,
        assignPublicIp: false,
        vpcSubnets: privateSubnets,
        securityGroups: [taskSgs[name]],
        circuitBreaker: { rollback: true },
        platformVersion: ecs.FargatePlatformVersion.VERSION1_4,
        propagateTags: ecs.PropagatedTagSource.SERVICE,
        enableExecuteCommand: false,
      });
      this.services[name] = service;
      const scaling = service.autoScaleTaskCount({ minCapacity: sizing.minTasks, maxCapacity: sizing.maxTasks });
      scaling.scaleOnCpuUtilization('Cpu', { targetUtilizationPercent: sizing.cpuTargetPercent, scaleOutCooldown: Duration.seconds(60), scaleInCooldown: Duration.seconds(300) });
      scaling.scaleOnMemoryUtilization('Memory', { targetUtilizationPercent: 75 });
      if (name === 'integration') {
        // The integration service also scales on the broker's backlog, before CPU shows it.
        scaling.scaleOnMetric('QueueDepth', {
          metric: new cloudwatch.Metric({ namespace: 'AWS/AmazonMQ', metricName: 'MessageReadyCount', dimensionsMap: { Broker: `${prefix}-broker` }, statistic: 'Maximum', period: Duration.minutes(1) }),
          scalingSteps: [{ upper: 1000, change: 0 }, { lower: 1000, change: 2 }, { lower: 10000, change: 6 }],
          adjustmentType: appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
          cooldown: Duration.seconds(120),
        });
      }
      const port = LISTENER_PORT[name];
      if (port !== undefined) {
        taskSgs[name].addIngressRule(ec2.Peer.ipv4(r.vpcCidr), ec2.Port.tcp(HTTP_PORT), 'From the internal NLB');
        const listener = nlb.addListener(`${pascal(name)}Listener`, {
          port,
          protocol: elbv2.Protocol.TLS,
          certificates: [elbv2.ListenerCertificate.fromCertificateManager(cert)],
          sslPolicy: elbv2.SslPolicy.TLS13_RES,
        });
        targetGroups[name] = listener.addTargets(`${pascal(name)}Targets`, {
          port: HTTP_PORT,
          protocol: elbv2.Protocol.TCP,
          targets: [service.loadBalancerTarget({ containerName: 'app', containerPort: HTTP_PORT })],
          deregistrationDelay: Duration.seconds(30),
          healthCheck: { protocol: elbv2.Protocol.HTTP, path: '/readyz', port: String(HTTP_PORT), interval: Duration.seconds(10), healthyThresholdCount: 2, unhealthyThresholdCount: 2 },
        });
      }
    }

    // API Gateway: the public External API (regional, WAF, custom domain) and the private
    // Internal API (reachable only through this VPC's execute-api endpoint).
    const regionalAcl = webAcl(this, 'ApiAcl', { scope: 'REGIONAL', ratePer5Min: cfg.wafRateLimitPer5Min, logsKey: lk, retentionDays: retention });
    const vpcLink = new apigw.VpcLink(this, 'VpcLink', { targets: [nlb], description: 'API Gateway to the internal NLB' });
    const integration = (port: number, path: string) => new apigw.Integration({
      type: apigw.IntegrationType.HTTP_PROXY,
      integrationHttpMethod: 'ANY',
      uri: `https://${nlbName}:${port}${path}`,
      options: {
        connectionType: apigw.ConnectionType.VPC_LINK,
        vpcLink,
        timeout: Duration.seconds(29),
        requestParameters: path.includes('{proxy}') ? { 'integration.request.path.proxy': 'method.request.path.proxy' } : undefined,
      },
    });
    const apis: apigw.RestApi[] = [];
    const restApi = (aid: string, props: { endpoint: apigw.EndpointType; policy?: iam.PolicyDocument; vpcEndpoints?: ec2.IVpcEndpoint[] }) => {
      const access = logGroup(this, `${aid}AccessLogs`, lk, retention);
      const api = new apigw.RestApi(this, aid, {
        restApiName: `${prefix}-${aid.toLowerCase()}`,
        endpointConfiguration: { types: [props.endpoint], vpcEndpoints: props.vpcEndpoints },
        policy: props.policy,
        disableExecuteApiEndpoint: props.endpoint === apigw.EndpointType.REGIONAL,
        // Execution logging needs the region's API Gateway account setting to name a role;
        // the first API creates it (one per account and region, i.e. per cell).
        cloudWatchRole: apis.length === 0,
        deployOptions: {
          stageName: 'live',
          accessLogDestination: new apigw.LogGroupLogDestination(access),
          accessLogFormat: apigw.AccessLogFormat.jsonWithStandardFields({ caller: false, httpMethod: true, ip: true, protocol: true, requestTime: true, resourcePath: true, responseLength: true, status: true, user: false }),
          loggingLevel: apigw.MethodLoggingLevel.ERROR,
          // Never log bodies: they carry card numbers.
          dataTraceEnabled: false,
          tracingEnabled: true,
          metricsEnabled: true,
          throttlingRateLimit: 5000,
          throttlingBurstLimit: 2500,
          cachingEnabled: false,
        },
      });
      new wafv2.CfnWebACLAssociation(this, `${aid}Waf`, { resourceArn: api.deploymentStage.stageArn, webAclArn: regionalAcl.attrArn });
      if (apis.length > 0) api.node.addDependency(apis[0]);
      apis.push(api);
      skipCheckov(api.deploymentStage, 'CKV_AWS_120', 'Responses are per-merchant and must never be cached at the gateway.');
      skipCheckov(api.deploymentStage, 'CKV2_AWS_51', 'Clients authenticate with API keys and staff tokens in the service; mutual TLS client certificates are not part of the API contract.');
      skipCheckov(api.deploymentStage, 'CKV2_AWS_4', 'Execution logs are kept at ERROR on purpose: access logs already record every request, and request/response data tracing (bodies carry card numbers) must stay off.');
      return api;
    };

    const externalApi = restApi('ExternalApi', { endpoint: apigw.EndpointType.REGIONAL });
    const validator = externalApi.addRequestValidator('Params', { validateRequestParameters: true, validateRequestBody: true });
    const proxyParams = { 'method.request.path.proxy': true };
    externalApi.root.addMethod('ANY', integration(443, '/'), { requestValidator: validator, authorizationType: apigw.AuthorizationType.NONE });
    externalApi.root.addResource('{proxy+}').addMethod('ANY', integration(443, '/{proxy}'), { requestParameters: proxyParams, requestValidator: validator, authorizationType: apigw.AuthorizationType.NONE });
    externalApi.root.addResource('checkout').addResource('{proxy+}').addMethod('ANY', integration(8443, '/checkout/{proxy}'), { requestParameters: proxyParams, requestValidator: validator, authorizationType: apigw.AuthorizationType.NONE });
    for (const [did, domainName] of [['ApiDomain', apiName], ['RegionalApiDomain', regionalApiName]] as const) {
      const domain = new apigw.DomainName(this, did, { domainName, certificate: cert, endpointType: apigw.EndpointType.REGIONAL, securityPolicy: apigw.SecurityPolicy.TLS_1_2 });
      domain.addBasePathMapping(externalApi, { stage: externalApi.deploymentStage });
      if (domainName === regionalApiName) {
        // The name the global stack's latency records and health checks point at.
        new route53.ARecord(this, 'RegionalApiRecord', { zone, recordName: regionalApiName, target: route53.RecordTarget.fromAlias(new targets.ApiGatewayDomain(domain)) });
      }
    }

    const executeApiEndpoint = endpoints['ExecuteApi'];
    const internalApi = restApi('InternalApi', {
      endpoint: apigw.EndpointType.PRIVATE,
      vpcEndpoints: [executeApiEndpoint],
      policy: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({ effect: iam.Effect.ALLOW, principals: [new iam.AnyPrincipal()], actions: ['execute-api:Invoke'], resources: ['execute-api:/*'] }),
          new iam.PolicyStatement({
            effect: iam.Effect.DENY,
            principals: [new iam.AnyPrincipal()],
            actions: ['execute-api:Invoke'],
            resources: ['execute-api:/*'],
            conditions: { StringNotEquals: { 'aws:SourceVpce': executeApiEndpoint.vpcEndpointId } },
          }),
        ],
      }),
    });
    const internalValidator = internalApi.addRequestValidator('Params', { validateRequestParameters: true, validateRequestBody: true });
    internalApi.root.addMethod('ANY', integration(9443, '/'), { requestValidator: internalValidator, authorizationType: apigw.AuthorizationType.NONE });
    internalApi.root.addResource('{proxy+}').addMethod('ANY', integration(9443, '/{proxy}'), { requestParameters: proxyParams, requestValidator: internalValidator, authorizationType: apigw.AuthorizationType.NONE });
    new CfnOutput(this, 'InternalApiId', { value: internalApi.restApiId, description: 'Private API: https://<id>-<vpce-id>.execute-api.<region>.amazonaws.com/live' });

    // ---- 6. security baseline and observability --------------------------------------------
    new SecurityBaseline(this, 'Security', { logsKey: lk, accessLogs, retentionDays: retention, recordGlobal: false, accountServices: cfg.accountSecurityServices });

    const topic = new sns.Topic(this, 'Alarms', { displayName: `Snakepay ${r.code} alarms`, masterKey: opsKey, enforceSSL: true });
    if (r.alarmEmail) topic.addSubscription(new subs.EmailSubscription(r.alarmEmail));
    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `${prefix}-overview` });
    const alarm = (aid: string, description: string, metric: cloudwatch.IMetric, threshold: number, op = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD, periods = 3) => {
      const a = new cloudwatch.Alarm(this, aid, { alarmDescription: description, metric, threshold, comparisonOperator: op, evaluationPeriods: periods, treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING });
      a.addAlarmAction(new cwActions.SnsAction(topic));
      a.addOkAction(new cwActions.SnsAction(topic));
      return a;
    };

    const serviceWidgets: cloudwatch.IWidget[] = [];
    for (const name of SERVICES) {
      const svc = this.services[name]!;
      alarm(`${pascal(name)}CpuHigh`, `${name}: CPU above 85% although auto scaling should have added tasks`, svc.metricCpuUtilization({ period: Duration.minutes(1) }), 85, undefined, 5);
      alarm(`${pascal(name)}TasksLow`, `${name}: fewer running tasks than the minimum (one per AZ)`,
        new cloudwatch.Metric({ namespace: 'ECS/ContainerInsights', metricName: 'RunningTaskCount', dimensionsMap: { ClusterName: cluster.clusterName, ServiceName: name }, statistic: 'Minimum', period: Duration.minutes(1) }),
        r.services[name].minTasks, cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD);
      const tg = targetGroups[name];
      if (tg) alarm(`${pascal(name)}Unhealthy`, `${name}: targets failing /readyz behind the NLB`, tg.metrics.unHealthyHostCount({ period: Duration.minutes(1) }), 0);
      serviceWidgets.push(new cloudwatch.GraphWidget({ title: `${name} CPU / memory`, left: [svc.metricCpuUtilization(), svc.metricMemoryUtilization()] }));
    }
    const apiMetric = (metricName: string, statistic: string) => new cloudwatch.Metric({ namespace: 'AWS/ApiGateway', metricName, dimensionsMap: { ApiName: `${prefix}-externalapi`, Stage: 'live' }, statistic, period: Duration.minutes(1) });
    alarm('Api5xx', 'External API: server errors', apiMetric('5XXError', 'Average'), 0.01);
    alarm('ApiLatencyP99', 'External API: p99 latency above 1.5 s', apiMetric('Latency', 'p99'), 1500);
    const dbWidgets: cloudwatch.IWidget[] = [];
    for (const c of [this.controlCluster, ...this.shardClusters]) {
      const cid = c.node.id;
      alarm(`${cid}Cpu`, `${cid}: writer CPU above 80%`, c.metricCPUUtilization({ period: Duration.minutes(1) }), 80, undefined, 5);
      alarm(`${cid}ReplicaLag`, `${cid}: replica lag above 1 s (failover target falling behind)`,
        new cloudwatch.Metric({ namespace: 'AWS/RDS', metricName: 'AuroraReplicaLagMaximum', dimensionsMap: { DBClusterIdentifier: c.clusterIdentifier }, statistic: 'Maximum', period: Duration.minutes(1) }), 1000);
      dbWidgets.push(new cloudwatch.GraphWidget({ title: `${cid} CPU / connections`, left: [c.metricCPUUtilization()], right: [c.metricDatabaseConnections()] }));
    }
    const redisMetric = (metricName: string) => new cloudwatch.Metric({ namespace: 'AWS/ElastiCache', metricName, dimensionsMap: { ReplicationGroupId: redis.ref }, statistic: 'Maximum', period: Duration.minutes(1) });
    alarm('RedisCpu', 'Redis: engine CPU above 80%', redisMetric('EngineCPUUtilization'), 80);
    alarm('RedisMemory', 'Redis: memory above 80%', redisMetric('DatabaseMemoryUsagePercentage'), 80);
    const brokerMetric = (metricName: string) => new cloudwatch.Metric({ namespace: 'AWS/AmazonMQ', metricName, dimensionsMap: { Broker: `${prefix}-broker` }, statistic: 'Maximum', period: Duration.minutes(1) });
    alarm('BrokerBacklog', 'Broker: more than 50k ready messages (consumers not keeping up)', brokerMetric('MessageReadyCount'), 50000);
    alarm('BrokerMemory', 'Broker: RabbitMQ memory alarm close', brokerMetric('RabbitMQMemUsed'), 0.8 * 8 * 1024 ** 3);
    this.natEips.forEach((_, i) => {
      const nat = vpc.publicSubnets[i].node.findChild('NATGateway') as ec2.CfnNatGateway;
      alarm(`Nat${i + 1}PortAllocation`, `NAT gateway ${i + 1}: port allocation errors (processor calls failing)`,
        new cloudwatch.Metric({ namespace: 'AWS/NATGateway', metricName: 'ErrorPortAllocation', dimensionsMap: { NatGatewayId: nat.ref }, statistic: 'Sum', period: Duration.minutes(1) }), 0, undefined, 1);
    });
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'External API requests / 5xx', left: [apiMetric('Count', 'Sum')], right: [apiMetric('5XXError', 'Sum')] }),
      new cloudwatch.GraphWidget({ title: 'External API latency p50 / p99', left: [apiMetric('Latency', 'p50'), apiMetric('Latency', 'p99')] }),
      new cloudwatch.GraphWidget({ title: 'Broker backlog', left: [brokerMetric('MessageReadyCount'), brokerMetric('MessageUnacknowledgedCount')] }),
      new cloudwatch.GraphWidget({ title: 'Redis CPU / memory', left: [redisMetric('EngineCPUUtilization'), redisMetric('DatabaseMemoryUsagePercentage')] }),
    );
    dashboard.addWidgets(...serviceWidgets);
    dashboard.addWidgets(...dbWidgets);

    // Waivers that must see every policy and method, so they come after everything is built.
    for (const api of apis) {
      skipNag(api, [
        { id: 'AwsSolutions-APIG4', reason: 'Callers authenticate inside the service (merchant secret keys as keyed hashes, staff tokens with roles); API Gateway cannot check them without the control database.' },
        { id: 'AwsSolutions-COG4', reason: 'No Cognito: merchants use API keys and staff use signed staff tokens, both verified by the services (DESIGN.md §7).' },
        { id: 'PCI.DSS.321-APIGWCacheEnabledAndEncrypted', reason: 'Responses are per merchant and per request; the gateway cache is off, so there is nothing to encrypt.' },
        { id: 'PCI.DSS.321-APIGWSSLEnabled', reason: 'The backend is reached through a VPC link over TLS to the NLB, verified against its ACM certificate; gateway client certificates only apply to public HTTP backends.' },
      ]);
    }
    for (const api of apis) {
      for (const method of api.methods) {
        skipCheckov(method, 'CKV_AWS_59', 'Callers authenticate inside the service (merchant secret keys, staff tokens with roles), which API Gateway cannot verify without the control database.');
      }
    }
    // CDK's singleton handler that strips the default security group's rules on deploy.
    const restrictSgHandler = this.node.tryFindChild('Custom::VpcRestrictDefaultSGCustomResourceProvider')?.node.tryFindChild('Handler');
    if (restrictSgHandler) {
      skipCheckov(restrictSgHandler, 'CKV_AWS_115', 'CDK-provided deploy-time handler that runs once per deployment; a concurrency limit has nothing to protect.');
      skipCheckov(restrictSgHandler, 'CKV_AWS_116', 'CDK-provided deploy-time handler invoked synchronously by CloudFormation, which reports its failure; a DLQ would never receive anything.');
      skipCheckov(restrictSgHandler, 'CKV_AWS_117', 'CDK-provided deploy-time handler that only calls the EC2 API; it touches no data and needs no VPC.');
      skipCheckov(restrictSgHandler, 'CKV_AWS_173', 'CDK-provided deploy-time handler with no environment variables to encrypt.');
    }
    const gwRole = apis[0].node.tryFindChild('CloudWatchRole');
    if (gwRole) {
      skipNag(gwRole, [{
        id: 'AwsSolutions-IAM4',
        reason: 'AmazonAPIGatewayPushToCloudWatchLogs is the AWS-maintained policy API Gateway requires for execution logs; it grants only CloudWatch Logs writes.',
        appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs'],
      }]);
    }
    for (const role of Object.values(this.taskRoles)) {
      skipNag(role!, [{
        id: 'AwsSolutions-IAM5',
        reason: 'xray:PutTraceSegments/PutTelemetryRecords support no resource-level permissions (AWS documents Resource "*"); nothing else in task roles is wildcarded.',
        appliesTo: ['Resource::*'],
      }]);
    }
    for (const td of taskDefs) {
      skipNag(td.obtainExecutionRole(), [{
        id: 'AwsSolutions-IAM5',
        reason: 'ecr:GetAuthorizationToken has no resource-level permissions; collector repositories are created by the pull-through cache under one fixed prefix.',
        appliesTo: ['Resource::*', `Resource::arn:<AWS::Partition>:ecr:${this.region}:${this.account}:repository/${PUBLIC_CACHE_PREFIX}/aws-observability/*`],
      }]);
    }
    skipNag(vpc, [{ id: 'PCI.DSS.321-VPCNoUnrestrictedRouteToIGW', reason: 'Only the public subnets route to the internet gateway, and they hold only the NAT gateways (processor egress); no task or data store lives there.' }]);

    new CfnOutput(this, 'ShardCount', { value: String(r.shardCount) });
    new CfnOutput(this, 'RegionCode', { value: r.code });
  }
}

function pascal(name: string): string {
  return name.split('-').map((p) => p[0].toUpperCase() + p.slice(1)).join('');
}
