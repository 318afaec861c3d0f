/** Small building blocks every stack uses the same way: KMS keys, log groups, buckets. */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { skipCheckov, skipNag } from './suppress';

/** A customer-managed KMS key with yearly automatic rotation that is never deleted with the stack. */
export function cmk(scope: Construct, id: string, description: string): kms.Key {
  return new kms.Key(scope, id, {
    description,
    enableKeyRotation: true,
    rotationPeriod: Duration.days(365),
    pendingWindow: Duration.days(30),
    removalPolicy: RemovalPolicy.RETAIN,
  });
}

/**
 * Key for CloudWatch Logs in this region. The logs service may use it only for log groups
 * of this account and region (encryption-context condition), as AWS documents.
 */
export function logsKey(scope: Construct): kms.Key {
  const key = cmk(scope, 'LogsKey', 'Snakepay CloudWatch Logs encryption');
  const stack = Stack.of(scope);
  key.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
    actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
    resources: ['*'],
    conditions: {
      ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${stack.partition}:logs:${stack.region}:${stack.account}:log-group:*` },
    },
  }));
  return key;
}

/** An encrypted log group with the configured retention, kept when the stack goes. */
export function logGroup(scope: Construct, id: string, key: kms.IKey, retentionDays: number, name?: string): logs.LogGroup {
  return new logs.LogGroup(scope, id, {
    logGroupName: name,
    encryptionKey: key,
    retention: retentionDays as logs.RetentionDays,
    removalPolicy: RemovalPolicy.RETAIN,
  });
}

/**
 * The bucket that receives S3 server access logs and load-balancer/CDN logs. S3 server
 * access logging only delivers to SSE-S3 buckets, so this is the one bucket without a CMK.
 */
export function accessLogBucket(scope: Construct, id: string, retentionDays: number): s3.Bucket {
  const bucket = new s3.Bucket(scope, id, {
    encryption: s3.BucketEncryption.S3_MANAGED,
    enforceSSL: true,
    minimumTLSVersion: 1.2,
    versioned: true,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    // CloudFront standard logs are written with ACLs, which need this ownership mode.
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
    lifecycleRules: [{ expiration: Duration.days(retentionDays), noncurrentVersionExpiration: Duration.days(30) }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
  skipNag(bucket, [
    { id: 'AwsSolutions-S1', reason: 'This is the access-log bucket itself; logging it into itself would loop.' },
    { id: 'PCI.DSS.321-S3BucketLoggingEnabled', reason: 'This is the access-log bucket itself; logging it into itself would loop.' },
    { id: 'PCI.DSS.321-S3DefaultEncryptionKMS', reason: 'S3 server access logging and ELB logs only deliver to SSE-S3 encrypted buckets.' },
    { id: 'PCI.DSS.321-S3BucketReplicationEnabled', reason: 'Logs stay in their region (cells are independent, data residency); versioning protects them.' },
  ]);
  skipCheckov(bucket, 'CKV_AWS_18', 'This is the access-log bucket itself; logging it into itself would loop.');
  skipCheckov(bucket, 'CKV_AWS_145', 'S3 server access logging and ELB logs only deliver to SSE-S3 encrypted buckets.');
  return bucket;
}

/** A private, versioned, CMK-encrypted bucket that logs its access to `logBucket`. */
export function secureBucket(scope: Construct, id: string, key: kms.IKey, logBucket: s3.IBucket, prefix: string, retentionDays?: number): s3.Bucket {
  const bucket = new s3.Bucket(scope, id, {
    encryption: s3.BucketEncryption.KMS,
    encryptionKey: key,
    bucketKeyEnabled: true,
    enforceSSL: true,
    minimumTLSVersion: 1.2,
    versioned: true,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    serverAccessLogsBucket: logBucket,
    serverAccessLogsPrefix: `${prefix}/`,
    lifecycleRules: retentionDays ? [{ expiration: Duration.days(retentionDays), noncurrentVersionExpiration: Duration.days(90) }] : [{ noncurrentVersionExpiration: Duration.days(90) }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
  skipNag(bucket, [
    { id: 'PCI.DSS.321-S3BucketReplicationEnabled', reason: 'Cells are independent and data stays in its region; versioning and retention protect the objects.' },
  ]);
  skipCheckov(bucket, 'CKV_AWS_144', 'Cells are independent and data stays in its region; versioning and retention protect the objects.');
  return bucket;
}
