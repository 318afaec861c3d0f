/** Assembles the stacks from the configuration; shared by bin/snakepay.ts and the tests. */
import { App, Aspects, Tags } from 'aws-cdk-lib';
import { AwsSolutionsChecks, NagSuppressions, PCIDSS321Checks } from 'cdk-nag';
import { DEFAULT_CONFIG, GlobalConfig, validateConfig } from './config';
import { GlobalStack } from './global-stack';
import { RegionStack } from './region-stack';
import { RegistryStack } from './registry-stack';

export interface Built {
  readonly global: GlobalStack;
  readonly regions: RegionStack[];
  readonly registries: RegistryStack[];
}

export function buildApp(app: App, opts: { nag: boolean; config?: GlobalConfig }): Built {
  const base = opts.config ?? DEFAULT_CONFIG;
  const cfg = validateConfig({
    ...base,
    account: app.node.tryGetContext('account') ?? base.account,
    hostedZoneId: app.node.tryGetContext('hostedZoneId') ?? base.hostedZoneId,
    domainName: app.node.tryGetContext('domainName') ?? base.domainName,
    imageTag: app.node.tryGetContext('imageTag') ?? base.imageTag,
  });
  Tags.of(app).add('project', 'snakepay');
  const global = new GlobalStack(app, 'Snakepay-Global', {
    env: { account: cfg.account, region: cfg.globalRegion },
    config: cfg,
    description: 'Snakepay global edge: Route 53, CloudFront + S3 (OAC), WAF, ACM',
    crossRegionReferences: false,
  });
  const registries = cfg.regions.map((r) => new RegistryStack(app, `Snakepay-${r.region}-Registry`, {
    env: { account: cfg.account, region: r.region },
    description: `Snakepay container registry for cell ${r.code} (${r.region}); deploy before the cell`,
    crossRegionReferences: false,
  }));
  const regions = cfg.regions.map((r) => {
    const stack = new RegionStack(app, `Snakepay-${r.region}`, {
      env: { account: cfg.account, region: r.region },
      config: cfg,
      region: r,
      description: `Snakepay regional cell ${r.code} (${r.region})`,
      crossRegionReferences: false,
    });
    Tags.of(stack).add('snakepay:region', r.code);
    return stack;
  });
  for (const stack of [global, ...registries, ...regions]) {
    NagSuppressions.addStackSuppressions(stack, [{
      id: 'PCI.DSS.321-IAMNoInlinePolicy',
      reason: 'Each role gets its own policy from CDK grants, scoped to that role\'s resources and versioned in git with this code; a customer-managed policy would be attached to exactly one role anyway.',
    }]);
  }
  if (opts.nag) {
    Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true, reports: true }));
    Aspects.of(app).add(new PCIDSS321Checks({ verbose: true, reports: true }));
  }
  return { global, regions, registries };
}
