/**
 * The per-region security baseline: CloudTrail (to an encrypted bucket and CloudWatch Logs),
 * GuardDuty, AWS Config with managed rules, and Macie. Used by every regional cell and by
 * the global stack's region, so each region is audited on its own and audit data never
 * leaves the region it describes.
 */
import { Stack } from 'aws-cdk-lib';
import * as cloudtrail from 'aws-cdk-lib/aws-cloudtrail';
import * as config from 'aws-cdk-lib/aws-config';
import * as guardduty from 'aws-cdk-lib/aws-guardduty';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as macie from 'aws-cdk-lib/aws-macie';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { cmk, logGroup, secureBucket } from './common';
import { skipCheckov, skipNag } from './suppress';

export interface SecurityBaselineProps {
  readonly logsKey: kms.IKey;
  readonly accessLogs: s3.IBucket;
  readonly retentionDays: number;
  /** True only in the global stack's region: records IAM and other global services once. */
  readonly recordGlobal: boolean;
  /**
   * Create the account-and-region singletons (GuardDuty detector, Config recorder and
   * delivery channel, Macie session). False where an organization already manages them
   * (e.g. a delegated administrator); the trail and the Config rules are created either way.
   */
  readonly accountServices: boolean;
}

/** Config managed rules that cover the controls this deployment relies on (identifier, parameters). */
export const CONFIG_RULES: readonly (readonly [string, Record<string, string>?])[] = [
  ['CLOUD_TRAIL_ENABLED'],
  ['CLOUD_TRAIL_ENCRYPTION_ENABLED'],
  ['CLOUD_TRAIL_LOG_FILE_VALIDATION_ENABLED'],
  ['CLOUDWATCH_LOG_GROUP_ENCRYPTED'],
  // Also catches log groups that services create themselves (Amazon MQ's broker logs).
  ['CW_LOGGROUP_RETENTION_PERIOD_CHECK', { MinRetentionTime: '365' }],
  ['CMK_BACKING_KEY_ROTATION_ENABLED'],
  ['GUARDDUTY_ENABLED_CENTRALIZED'],
  ['VPC_FLOW_LOGS_ENABLED'],
  ['VPC_DEFAULT_SECURITY_GROUP_CLOSED'],
  ['INCOMING_SSH_DISABLED'],
  ['RDS_STORAGE_ENCRYPTED'],
  ['RDS_CLUSTER_MULTI_AZ_ENABLED'],
  ['RDS_CLUSTER_DELETION_PROTECTION_ENABLED'],
  ['RDS_CLUSTER_IAM_AUTHENTICATION_ENABLED'],
  ['RDS_INSTANCE_PUBLIC_ACCESS_CHECK'],
  ['RDS_SNAPSHOTS_PUBLIC_PROHIBITED'],
  ['DB_INSTANCE_BACKUP_ENABLED'],
  ['ELASTICACHE_REPL_GRP_ENCRYPTED_AT_REST'],
  ['ELASTICACHE_REPL_GRP_ENCRYPTED_IN_TRANSIT'],
  ['S3_BUCKET_PUBLIC_READ_PROHIBITED'],
  ['S3_BUCKET_PUBLIC_WRITE_PROHIBITED'],
  ['S3_BUCKET_SSL_REQUESTS_ONLY'],
  ['S3_BUCKET_SERVER_SIDE_ENCRYPTION_ENABLED'],
  ['SECRETSMANAGER_USING_CMK'],
  ['ECS_TASK_DEFINITION_NONROOT_USER'],
  ['ECS_CONTAINERS_READONLY_ACCESS'],
  ['ECS_NO_ENVIRONMENT_SECRETS', { secretKeys: 'SNAKEPAY_REDIS__PASSWORD,SNAKEPAY_BROKER__PASSWORD,SNAKEPAY_API_KEYS__PEPPER,SNAKEPAY_STAFF__TOKEN_KEY,SNAKEPAY_VAULT__FINGERPRINT_KEY' }],
  ['MQ_NO_PUBLIC_ACCESS'],
  ['API_GW_EXECUTION_LOGGING_ENABLED'],
  ['WAFV2_LOGGING_ENABLED'],
];

export class SecurityBaseline extends Construct {
  readonly auditBucket: s3.Bucket;
  readonly auditKey: kms.Key;

  constructor(scope: Construct, id: string, props: SecurityBaselineProps) {
    super(scope, id);
    const stack = Stack.of(this);

    this.auditKey = cmk(this, 'AuditKey', 'Snakepay audit trail (CloudTrail, Config) encryption');
    this.auditKey.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudTrailEncrypt',
      principals: [new iam.ServicePrincipal('cloudtrail.amazonaws.com')],
      actions: ['kms:GenerateDataKey*', 'kms:DescribeKey'],
      resources: ['*'],
      conditions: { StringLike: { 'kms:EncryptionContext:aws:cloudtrail:arn': `arn:${stack.partition}:cloudtrail:*:${stack.account}:trail/*` } },
    }));
    this.auditKey.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'ConfigDelivery',
      principals: [new iam.ServicePrincipal('config.amazonaws.com')],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
      resources: ['*'],
      conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
    }));

    this.auditBucket = secureBucket(this, 'AuditBucket', this.auditKey, props.accessLogs, 'audit');

    // CloudTrail: management events of this region, with digest files, to S3 and CloudWatch Logs.
    const trailLogs = logGroup(this, 'TrailLogs', props.logsKey, props.retentionDays);
    const trail = new cloudtrail.Trail(this, 'Trail', {
      bucket: this.auditBucket,
      s3KeyPrefix: 'cloudtrail',
      encryptionKey: this.auditKey,
      enableFileValidation: true,
      sendToCloudWatchLogs: true,
      cloudWatchLogGroup: trailLogs,
      includeGlobalServiceEvents: props.recordGlobal,
      isMultiRegionTrail: false,
      managementEvents: cloudtrail.ReadWriteType.ALL,
    });
    skipCheckov(trail, 'CKV_AWS_67', 'Each region (cell) has its own trail so audit data stays in the region it describes; every deployed region runs this baseline.');
    skipCheckov(trail, 'CKV_AWS_252', 'Trail notifications are not consumed; the trail is monitored through CloudWatch Logs and Config rules.');

    // GuardDuty with the protections that apply to this workload.
    if (props.accountServices) new guardduty.CfnDetector(this, 'GuardDuty', {
      enable: true,
      findingPublishingFrequency: 'FIFTEEN_MINUTES',
      features: [
        { name: 'S3_DATA_EVENTS', status: 'ENABLED' },
        { name: 'RDS_LOGIN_EVENTS', status: 'ENABLED' },
        { name: 'RUNTIME_MONITORING', status: 'ENABLED', additionalConfiguration: [{ name: 'ECS_FARGATE_AGENT_MANAGEMENT', status: 'ENABLED' }] },
      ],
    });

    // AWS Config: record every supported resource, deliver to the audit bucket, evaluate rules.
    let recorder: config.CfnConfigurationRecorder | undefined;
    if (props.accountServices) {
      const recorderRole = new iam.Role(this, 'ConfigRole', {
        assumedBy: new iam.ServicePrincipal('config.amazonaws.com'),
        managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWS_ConfigRole')],
      });
      skipNag(recorderRole, [{
        id: 'AwsSolutions-IAM4',
        reason: 'AWS_ConfigRole is the AWS-maintained read-only policy the Config recorder needs to describe every resource type; AWS updates it as types are added.',
        appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWS_ConfigRole'],
      }]);
      recorder = new config.CfnConfigurationRecorder(this, 'Recorder', {
        roleArn: recorderRole.roleArn,
        recordingGroup: { allSupported: true, includeGlobalResourceTypes: props.recordGlobal },
      });
      this.auditBucket.addToResourcePolicy(new iam.PolicyStatement({
        sid: 'ConfigAclCheck',
        principals: [new iam.ServicePrincipal('config.amazonaws.com')],
        actions: ['s3:GetBucketAcl', 's3:ListBucket'],
        resources: [this.auditBucket.bucketArn],
        conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
      }));
      this.auditBucket.addToResourcePolicy(new iam.PolicyStatement({
        sid: 'ConfigWrite',
        principals: [new iam.ServicePrincipal('config.amazonaws.com')],
        actions: ['s3:PutObject'],
        resources: [this.auditBucket.arnForObjects(`config/AWSLogs/${stack.account}/Config/*`)],
        conditions: { StringEquals: { 's3:x-amz-acl': 'bucket-owner-full-control', 'aws:SourceAccount': stack.account } },
      }));
      const channel = new config.CfnDeliveryChannel(this, 'Delivery', {
        s3BucketName: this.auditBucket.bucketName,
        s3KeyPrefix: 'config',
        s3KmsKeyArn: this.auditKey.keyArn,
        configSnapshotDeliveryProperties: { deliveryFrequency: 'Six_Hours' },
      });
      channel.node.addDependency(this.auditBucket);
    }
    for (const [identifier, inputParameters] of CONFIG_RULES) {
      const rule = new config.ManagedRule(this, `Rule${identifier}`, { identifier, inputParameters });
      if (recorder) rule.node.addDependency(recorder);
    }

    // Macie: discovers sensitive data (e.g. a PAN that should never be there) in S3.
    if (props.accountServices) new macie.CfnSession(this, 'Macie', { status: 'ENABLED', findingPublishingFrequency: 'FIFTEEN_MINUTES' });
  }
}
