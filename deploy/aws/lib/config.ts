/**
 * Typed deployment configuration: one global part (DNS, CDN, edge WAF) and one entry per
 * region. Each region is an independent cell (DESIGN.md §1): nothing in one region's stack
 * refers to another region's resources, so a region can be added, drained or lost alone.
 *
 * The values below are the production defaults. Account and hosted zone are placeholders
 * that an operator overrides with `-c account=... -c hostedZoneId=...` (see bin/snakepay.ts);
 * everything else is checked in so a synth is reproducible and needs no AWS look-up.
 */

/** The long-running services ECS runs (processor-sim is local/test only, never deployed). */
export type ServiceName = 'web' | 'external-api' | 'internal-api' | 'integration';

export const SERVICES: readonly ServiceName[] = ['web', 'external-api', 'internal-api', 'integration'];

export interface ServiceSizing {
  /** Fargate CPU units (1024 = 1 vCPU). */
  readonly cpu: number;
  readonly memoryMiB: number;
  /** At least one task per AZ, so the service survives the loss of an AZ. */
  readonly minTasks: number;
  readonly maxTasks: number;
  /** Target average CPU utilisation for target-tracking scaling, in percent. */
  readonly cpuTargetPercent: number;
}

export interface DatabaseSizing {
  readonly instanceClass: string; // e.g. 'r7g.large' (without the 'db.' prefix)
  /** Readers in addition to the writer. At least 1 so every cluster has a failover target in another AZ. */
  readonly readers: number;
}

export interface RegionConfig {
  /** AWS region name, e.g. 'eu-west-1'. */
  readonly region: string;
  /** The region's short code, e.g. 'eu1' (`region.code` in the services' config). */
  readonly code: string;
  /** The region number every Snakepay ID carries (DESIGN.md §4); unique, 0–255. */
  readonly number: number;
  readonly vpcCidr: string;
  /** Number of shard databases (payments, ledger) in this region; the control DB is extra. */
  readonly shardCount: number;
  readonly controlDb: DatabaseSizing;
  readonly shardDb: DatabaseSizing;
  readonly redisNodeType: string;
  /** Primary + replicas; at least 2 so Multi-AZ automatic failover is possible. */
  readonly redisNodes: number;
  readonly brokerInstanceType: string;
  readonly services: Record<ServiceName, ServiceSizing>;
  /**
   * CIDR blocks of the card processors this region's integration service may call. Only
   * the integration service gets egress to them (port 443, through the NAT gateways); the
   * NAT gateways' Elastic IPs are stack outputs for the processors' allow-lists.
   */
  readonly processorCidrs: readonly string[];
  /**
   * The AWS-managed prefix list of S3 in this region (com.amazonaws.<region>.s3), for task
   * egress to ECR image layers through the S3 gateway endpoint. Fixed per region; written
   * here so synth needs no look-up (check: aws ec2 describe-managed-prefix-lists).
   */
  readonly s3PrefixListId: string;
  /** E-mail address for alarm notifications (SNS subscription); empty for none. */
  readonly alarmEmail: string;
}

export interface GlobalConfig {
  /** The AWS account all stacks deploy to (placeholder; override with -c account=...). */
  readonly account: string;
  /** Region of the global stack: CloudFront certificates and CLOUDFRONT-scope WAF must live in us-east-1. */
  readonly globalRegion: 'us-east-1';
  readonly domainName: string;
  readonly hostedZoneId: string;
  /** Image tag every service runs (the release). */
  readonly imageTag: string;
  /** Log retention for every log group, in days (PCI DSS 10.7: at least one year). */
  readonly logRetentionDays: 365 | 400 | 545 | 731;
  /** Requests per 5 minutes per client IP before the WAF rate rule blocks. */
  readonly wafRateLimitPer5Min: number;
  /** Aurora automated-backup retention (also the point-in-time-recovery window), in days. */
  readonly backupRetentionDays: number;
  /**
   * Whether the stacks create GuardDuty, the Config recorder and Macie in each region. Set
   * false where AWS Organizations already runs them for the account (they are per-account
   * singletons and a second one fails to create).
   */
  readonly accountSecurityServices: boolean;
  readonly regions: readonly RegionConfig[];
}

const defaultServices: Record<ServiceName, ServiceSizing> = {
  'web': { cpu: 256, memoryMiB: 512, minTasks: 3, maxTasks: 12, cpuTargetPercent: 60 },
  'external-api': { cpu: 1024, memoryMiB: 2048, minTasks: 3, maxTasks: 48, cpuTargetPercent: 55 },
  'internal-api': { cpu: 512, memoryMiB: 1024, minTasks: 3, maxTasks: 9, cpuTargetPercent: 60 },
  'integration': { cpu: 1024, memoryMiB: 2048, minTasks: 3, maxTasks: 48, cpuTargetPercent: 55 },
};

export const DEFAULT_CONFIG: GlobalConfig = {
  account: '111111111111',
  globalRegion: 'us-east-1',
  domainName: 'snakepay.example.com',
  hostedZoneId: 'Z0000000000000000000',
  imageTag: '0.1.0',
  logRetentionDays: 400,
  wafRateLimitPer5Min: 2000,
  backupRetentionDays: 35,
  accountSecurityServices: true,
  regions: [
    {
      region: 'eu-west-1',
      code: 'eu1',
      number: 1,
      vpcCidr: '10.10.0.0/16',
      shardCount: 2,
      controlDb: { instanceClass: 'r7g.large', readers: 1 },
      shardDb: { instanceClass: 'r7g.xlarge', readers: 1 },
      redisNodeType: 'cache.r7g.large',
      redisNodes: 3,
      brokerInstanceType: 'mq.m5.large',
      services: defaultServices,
      // Documentation ranges (RFC 5737) standing in for the processors' published ranges.
      processorCidrs: ['198.51.100.0/24'],
      s3PrefixListId: 'pl-6da54004',
      alarmEmail: '',
    },
    {
      region: 'us-east-2',
      code: 'us1',
      number: 2,
      vpcCidr: '10.20.0.0/16',
      shardCount: 2,
      controlDb: { instanceClass: 'r7g.large', readers: 1 },
      shardDb: { instanceClass: 'r7g.xlarge', readers: 1 },
      redisNodeType: 'cache.r7g.large',
      redisNodes: 3,
      brokerInstanceType: 'mq.m5.large',
      services: defaultServices,
      processorCidrs: ['203.0.113.0/24'],
      s3PrefixListId: 'pl-7ba54012',
      alarmEmail: '',
    },
  ],
};

/** Rejects configurations that would silently break an invariant the stacks rely on. */
export function validateConfig(cfg: GlobalConfig): GlobalConfig {
  const problems: string[] = [];
  if (cfg.regions.length < 2) problems.push('at least two regions are required');
  const seen = new Set<string>();
  for (const r of cfg.regions) {
    if (seen.has(r.region)) problems.push(`region ${r.region} listed twice`);
    seen.add(r.region);
    if (!/^[a-z]{2}[0-9]$/.test(r.code)) problems.push(`${r.region}: code must look like 'eu1'`);
    if (r.shardCount < 1 || r.shardCount > 64) problems.push(`${r.region}: shardCount must be 1..64`);
    if (r.controlDb.readers < 1 || r.shardDb.readers < 1) problems.push(`${r.region}: every cluster needs a reader in another AZ`);
    if (r.redisNodes < 2) problems.push(`${r.region}: Redis needs at least 2 nodes for Multi-AZ failover`);
    for (const s of SERVICES) {
      const z = r.services[s];
      if (z.minTasks < 3) problems.push(`${r.region}/${s}: minTasks must cover the 3 AZs`);
      if (z.maxTasks < z.minTasks) problems.push(`${r.region}/${s}: maxTasks < minTasks`);
    }
    if (!/^pl-[0-9a-f]+$/.test(r.s3PrefixListId)) problems.push(`${r.region}: s3PrefixListId must look like pl-...`);
    if (r.processorCidrs.length === 0) problems.push(`${r.region}: no processor CIDRs`);
  }
  if (problems.length > 0) throw new Error(`invalid Snakepay deployment config:\n  ${problems.join('\n  ')}`);
  return cfg;
}
