/**
 * Assertions on the synthesized templates: the properties the architecture promises
 * (docs/architecture.md) checked resource by resource, so a change that breaks one fails here.
 * Run with node's built-in test runner after `tsc` (npm test).
 */
import { strict as assert } from 'node:assert';
import { before, describe, it } from 'node:test';
import { App, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { buildApp, Built } from '../lib/app';
import { DEFAULT_CONFIG, GlobalConfig, validateConfig } from '../lib/config';

type Resources = Record<string, { Type: string; Properties?: Record<string, any>; Metadata?: Record<string, any> }>;

function resources(t: Template, type: string): [string, Record<string, any>][] {
  const all = t.toJSON().Resources as Resources;
  return Object.entries(all).filter(([, r]) => r.Type === type).map(([id, r]) => [id, r.Properties ?? {}]);
}

function build(config: GlobalConfig = DEFAULT_CONFIG, nag = false): Built {
  const app = new App({ context: { nag: String(nag) } });
  return buildApp(app, { nag, config });
}

describe('Snakepay AWS deployment', () => {
  let built: Built;
  let regional: Template[];
  let global: Template;
  let registries: Template[];

  before(() => {
    built = build(DEFAULT_CONFIG, true);
    regional = built.regions.map((s) => Template.fromStack(s));
    global = Template.fromStack(built.global);
    registries = built.registries.map((s) => Template.fromStack(s));
  });

  it('deploys one independent stack per configured region, at least two', () => {
    assert.ok(built.regions.length >= 2);
    assert.deepEqual(built.regions.map((s) => s.region), DEFAULT_CONFIG.regions.map((r) => r.region));
    assert.equal(built.global.region, 'us-east-1');
  });

  it('spreads every VPC over three AZs with public, private and isolated subnets', () => {
    for (const [i, t] of regional.entries()) {
      const subnets = resources(t, 'AWS::EC2::Subnet');
      assert.equal(subnets.length, 9);
      for (const kind of ['public', 'private', 'isolated']) {
        const azs = new Set(subnets.filter(([, p]) => p.Tags.some((tag: any) => tag.Key === 'aws-cdk:subnet-name' && tag.Value === kind)).map(([, p]) => p.AvailabilityZone));
        assert.equal(azs.size, 3, `${kind} subnets of ${built.regions[i].region} span ${azs.size} AZs`);
      }
      for (const [, p] of subnets) assert.equal(p.MapPublicIpOnLaunch, false);
      t.resourceCountIs('AWS::EC2::FlowLog', 1);
    }
  });

  it('has one NAT gateway per AZ, each in its own public subnet, with its egress IP as an output', () => {
    for (const t of regional) {
      const nats = resources(t, 'AWS::EC2::NatGateway');
      assert.equal(nats.length, 3);
      assert.equal(new Set(nats.map(([, p]) => JSON.stringify(p.SubnetId))).size, 3);
      const outputs = Object.keys(t.toJSON().Outputs).filter((k) => k.startsWith('NatEgressIp'));
      assert.equal(outputs.length, 3);
    }
  });

  it('creates the control cluster plus one Aurora cluster per shard, each multi-AZ, encrypted, protected and recoverable', () => {
    for (const [i, t] of regional.entries()) {
      const cfg = DEFAULT_CONFIG.regions[i];
      const clusters = resources(t, 'AWS::RDS::DBCluster');
      assert.equal(clusters.length, cfg.shardCount + 1);
      for (const [, p] of clusters) {
        assert.equal(p.Engine, 'aurora-postgresql');
        assert.equal(p.StorageEncrypted, true);
        assert.ok(p.KmsKeyId, 'customer-managed key');
        assert.equal(p.DeletionProtection, true);
        assert.equal(p.EnableIAMDatabaseAuthentication, true);
        assert.ok(p.BackupRetentionPeriod >= 35, 'PITR window');
        assert.equal(p.DBSubnetGroupName.Ref !== undefined, true);
      }
      const instances = resources(t, 'AWS::RDS::DBInstance');
      assert.ok(instances.length >= 2 * clusters.length, 'writer + reader in another AZ per cluster');
      for (const [, p] of instances) assert.equal(p.PubliclyAccessible, false);
    }
  });

  it('follows the configured shard count', () => {
    const cfg: GlobalConfig = { ...DEFAULT_CONFIG, regions: DEFAULT_CONFIG.regions.map((r, i) => ({ ...r, shardCount: i === 0 ? 4 : 1 })) };
    const b = build(cfg);
    const counts = b.regions.map((s) => resources(Template.fromStack(s), 'AWS::RDS::DBCluster').length);
    assert.deepEqual(counts, [5, 2]);
    const env = resources(Template.fromStack(b.regions[0]), 'AWS::ECS::TaskDefinition')
      .flatMap(([, p]) => p.ContainerDefinitions)
      .flatMap((c: any) => c.Environment ?? [])
      .find((e: any) => e.Name === 'SNAKEPAY_DATABASE__SHARD_URLS');
    assert.ok(env, 'shard URLs are passed to the services');
    assert.equal(JSON.stringify(env.Value).split('postgres://').length - 1, 4);
  });

  it('runs Redis multi-AZ with encryption in transit and at rest and AUTH', () => {
    for (const t of regional) {
      t.hasResourceProperties('AWS::ElastiCache::ReplicationGroup', {
        MultiAZEnabled: true,
        AutomaticFailoverEnabled: true,
        AtRestEncryptionEnabled: true,
        TransitEncryptionEnabled: true,
        KmsKeyId: Match.anyValue(),
        AuthToken: Match.anyValue(),
      });
      const [[, rg]] = resources(t, 'AWS::ElastiCache::ReplicationGroup');
      assert.ok(rg.NumCacheClusters >= 2);
    }
  });

  it('runs RabbitMQ as a private multi-AZ cluster', () => {
    for (const t of regional) {
      t.hasResourceProperties('AWS::AmazonMQ::Broker', { EngineType: 'RABBITMQ', DeploymentMode: 'CLUSTER_MULTI_AZ', PubliclyAccessible: false });
    }
  });

  it('encrypts every log group, bucket, topic, secret and repository, and rotates every key', () => {
    for (const t of registries) assert.equal(resources(t, 'AWS::ECR::Repository').length, 5);
    for (const t of [global, ...regional, ...registries]) {
      for (const [id, p] of resources(t, 'AWS::Logs::LogGroup')) {
        assert.ok(p.KmsKeyId, `${id} encrypted`);
        assert.ok(p.RetentionInDays >= 365, `${id} retained a year`);
      }
      for (const [id, p] of resources(t, 'AWS::S3::Bucket')) assert.ok(p.BucketEncryption, `${id} encrypted`);
      for (const [id, p] of resources(t, 'AWS::SNS::Topic')) assert.ok(p.KmsMasterKeyId, `${id} encrypted`);
      for (const [id, p] of resources(t, 'AWS::SecretsManager::Secret')) assert.ok(p.KmsKeyId, `${id} encrypted with a CMK`);
      for (const [id, p] of resources(t, 'AWS::ECR::Repository')) assert.equal(p.EncryptionConfiguration?.EncryptionType, 'KMS', id);
      for (const [id, p] of resources(t, 'AWS::KMS::Key')) assert.equal(p.EnableKeyRotation, true, `${id} rotates`);
    }
    for (const t of regional) {
      for (const [, p] of resources(t, 'AWS::ElasticLoadBalancingV2::Listener')) assert.equal(p.Protocol, 'TLS');
      for (const [, p] of resources(t, 'AWS::ApiGateway::DomainName')) assert.equal(p.SecurityPolicy, 'TLS_1_2');
      for (const [, p] of resources(t, 'AWS::ApiGateway::Stage')) {
        assert.equal(p.TracingEnabled, true);
        assert.ok(p.AccessLogSetting, 'access logs');
        for (const m of p.MethodSettings ?? []) assert.equal(m.DataTraceEnabled, false, 'never log bodies (card data)');
      }
    }
  });

  it('gives no task a public IP and runs every service across the private subnets of all AZs', () => {
    for (const t of regional) {
      const services = resources(t, 'AWS::ECS::Service');
      assert.equal(services.length, 4);
      for (const [id, p] of services) {
        assert.equal(p.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp, 'DISABLED', id);
        assert.equal(p.NetworkConfiguration.AwsvpcConfiguration.Subnets.length, 3, id);
        assert.ok(p.DesiredCount >= 3, id);
      }
      assert.equal(resources(t, 'AWS::ApplicationAutoScaling::ScalableTarget').length, 4);
      for (const [, p] of resources(t, 'AWS::ECS::TaskDefinition')) {
        for (const c of p.ContainerDefinitions) {
          assert.equal(c.ReadonlyRootFilesystem, true, `${c.Name} read-only root`);
          assert.ok(c.User && !c.User.startsWith('0'), `${c.Name} non-root`);
          assert.equal(c.LogConfiguration.LogDriver, 'awslogs');
          assert.ok(!(c.Environment ?? []).some((e: any) => /PASSWORD|TOKEN_KEY|HASH_SECRET|FINGERPRINT/.test(e.Name)), 'secrets only via Secrets Manager');
        }
      }
    }
  });

  it('lets only the integration service decrypt card data and reach the processors', () => {
    for (const [i, s] of built.regions.entries()) {
      const t = regional[i];
      const cardKey = s.resolve((s.cardDataKey.node.defaultChild as any).logicalId);
      const decryptors = resources(t, 'AWS::IAM::Policy').filter(([, p]) => p.PolicyDocument.Statement.some((st: any) =>
        [st.Action].flat().includes('kms:Decrypt') && JSON.stringify(st.Resource).includes(cardKey)));
      assert.deepEqual(decryptors.map(([, p]) => JSON.stringify(p.Roles)), [JSON.stringify([{ Ref: s.resolve((s.taskRoles['integration']!.node.defaultChild as any).logicalId) }])]);

      // The card key's own policy lets no one but the named task roles use it (no IAM delegation).
      const [[, keyProps]] = resources(t, 'AWS::KMS::Key').filter(([id]) => id === cardKey);
      for (const st of keyProps.KeyPolicy.Statement) {
        const actions = [st.Action].flat();
        if (JSON.stringify(st.Principal).includes(':root')) {
          assert.ok(!actions.some((x: string) => x === 'kms:*' || x.startsWith('kms:Decrypt') || x.startsWith('kms:ReEncrypt') || x.startsWith('kms:GenerateDataKey')), `root may not use the card key: ${actions}`);
        }
        if (actions.includes('kms:Decrypt')) {
          assert.deepEqual(st.Principal, { AWS: { 'Fn::GetAtt': [s.resolve((s.taskRoles['integration']!.node.defaultChild as any).logicalId), 'Arn'] } });
        }
      }

      const vpcCidr = DEFAULT_CONFIG.regions[i].vpcCidr;
      const sgs = resources(t, 'AWS::EC2::SecurityGroup');
      const external = sgs.filter(([, p]) => (p.SecurityGroupEgress ?? []).some((e: any) => e.CidrIp && e.CidrIp !== vpcCidr && e.CidrIp !== '255.255.255.255/32'));
      assert.deepEqual(external.map(([, p]) => p.GroupDescription), ['ECS tasks of integration']);
      for (const [, p] of external) {
        for (const e of p.SecurityGroupEgress.filter((x: any) => x.CidrIp && x.CidrIp !== '255.255.255.255/32')) {
          assert.ok(DEFAULT_CONFIG.regions[i].processorCidrs.includes(e.CidrIp));
          assert.equal(e.FromPort, 443);
        }
      }
    }
  });

  it('grants no wildcard IAM actions', () => {
    for (const t of [global, ...regional, ...registries]) {
      for (const [id, p] of resources(t, 'AWS::IAM::Policy')) {
        for (const st of p.PolicyDocument.Statement) {
          for (const a of [st.Action].flat()) assert.ok(a !== '*' && !/:\*$/.test(a), `${id}: ${a}`);
        }
      }
    }
  });

  it('keeps regions independent: no imports, no cross-region plumbing, no other region named', () => {
    const regionNames = DEFAULT_CONFIG.regions.map((r) => r.region);
    for (const [i, s] of built.regions.entries()) {
      const json = JSON.stringify(regional[i].toJSON());
      assert.ok(!json.includes('Fn::ImportValue'), 'no Fn::ImportValue');
      assert.ok(!/CrossRegion|ExportsReader|ExportsWriter/.test(json), 'no cross-region reference machinery');
      for (const other of regionNames.filter((r) => r !== s.region)) assert.ok(!json.includes(other), `${s.region} mentions ${other}`);
      assert.equal(s.dependencies.length, 0);
      const registryJson = JSON.stringify(registries[i].toJSON());
      for (const other of regionNames.filter((r) => r !== s.region)) assert.ok(!registryJson.includes(other));
      assert.equal(built.registries[i].region, s.region);
      assert.equal(built.registries[i].dependencies.length, 0);
    }
    assert.ok(!JSON.stringify(global.toJSON()).includes('Fn::ImportValue'));
    assert.equal(built.global.dependencies.length, 0);
  });

  it('routes the API by latency to every region with health checks, and serves the web bucket through CloudFront with OAC and WAF', () => {
    const records = resources(global, 'AWS::Route53::RecordSet').filter(([, p]) => p.Region);
    assert.deepEqual(records.map(([, p]) => p.Region).sort(), DEFAULT_CONFIG.regions.map((r) => r.region).sort());
    for (const [, p] of records) assert.ok(p.HealthCheckId, 'health-checked');
    global.resourceCountIs('AWS::Route53::HealthCheck', DEFAULT_CONFIG.regions.length);
    global.resourceCountIs('AWS::CloudFront::OriginAccessControl', 1);
    global.hasResourceProperties('AWS::CloudFront::Distribution', {
      DistributionConfig: Match.objectLike({ WebACLId: Match.anyValue(), ViewerCertificate: Match.objectLike({ MinimumProtocolVersion: 'TLSv1.2_2021' }) }),
    });
    const acls = resources(global, 'AWS::WAFv2::WebACL');
    assert.equal(acls.length, 1);
    assert.equal(acls[0][1].Scope, 'CLOUDFRONT');
    assert.ok(acls[0][1].Rules.some((r: any) => r.Statement.RateBasedStatement));
    assert.ok(acls[0][1].Rules.filter((r: any) => r.Statement.ManagedRuleGroupStatement).length >= 3);
  });

  it('enables GuardDuty, Config, CloudTrail and Macie in every region', () => {
    for (const t of [global, ...regional]) {
      t.resourceCountIs('AWS::GuardDuty::Detector', 1);
      t.resourceCountIs('AWS::Config::ConfigurationRecorder', 1);
      assert.ok(resources(t, 'AWS::Config::ConfigRule').length >= 20);
      t.hasResourceProperties('AWS::CloudTrail::Trail', { EnableLogFileValidation: true, KMSKeyId: Match.anyValue(), CloudWatchLogsLogGroupArn: Match.anyValue() });
      t.resourceCountIs('AWS::Macie::Session', 1);
    }
    for (const t of regional) {
      assert.ok(resources(t, 'AWS::CloudWatch::Alarm').length >= 15);
      t.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    }
  });

  it('leaves no cdk-nag finding unsuppressed (AwsSolutions, PCI DSS 3.2.1)', () => {
    for (const s of [built.global, ...built.registries, ...built.regions]) {
      const errors = Annotations.fromStack(s).findError('*', Match.stringLikeRegexp('(AwsSolutions|PCI\\.DSS\\.321)-'));
      const warnings = Annotations.fromStack(s).findWarning('*', Match.stringLikeRegexp('(AwsSolutions|PCI\\.DSS\\.321)-'));
      assert.deepEqual([...errors, ...warnings].map((e) => `${e.id}: ${String(e.entry.data).split(':')[0]}`), [], Stack.of(s).stackName);
    }
  });

  it('rejects a configuration with a single region or a shard-less region', () => {
    assert.throws(() => validateConfig({ ...DEFAULT_CONFIG, regions: DEFAULT_CONFIG.regions.slice(0, 1) }), /at least two regions/);
    assert.throws(() => validateConfig({ ...DEFAULT_CONFIG, regions: DEFAULT_CONFIG.regions.map((r) => ({ ...r, shardCount: 0 })) }), /shardCount/);
  });
});
