/** A web ACL with AWS managed rule groups, a per-IP rate rule and redacted logging. */
import * as kms from 'aws-cdk-lib/aws-kms';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { logGroup } from './common';

export interface WebAclProps {
  readonly scope: 'CLOUDFRONT' | 'REGIONAL';
  readonly ratePer5Min: number;
  readonly logsKey: kms.IKey;
  readonly retentionDays: number;
}

const MANAGED_GROUPS = [
  'AWSManagedRulesCommonRuleSet',
  'AWSManagedRulesKnownBadInputsRuleSet',
  'AWSManagedRulesAmazonIpReputationList',
  'AWSManagedRulesSQLiRuleSet',
];

export function webAcl(scope: Construct, id: string, props: WebAclProps): wafv2.CfnWebACL {
  const visibility = (name: string) => ({ cloudWatchMetricsEnabled: true, sampledRequestsEnabled: true, metricName: name });
  const rules: wafv2.CfnWebACL.RuleProperty[] = [
    {
      name: 'RatePerIp',
      priority: 0,
      action: { block: {} },
      statement: { rateBasedStatement: { limit: props.ratePer5Min, aggregateKeyType: 'IP' } },
      visibilityConfig: visibility('RatePerIp'),
    },
    ...MANAGED_GROUPS.map((name, i) => ({
      name,
      priority: i + 1,
      overrideAction: { none: {} },
      statement: {
        managedRuleGroupStatement: {
          vendorName: 'AWS',
          name,
          // JSON API bodies legitimately exceed the common rule set's 8 KB body check.
          ruleActionOverrides: name === 'AWSManagedRulesCommonRuleSet' ? [{ name: 'SizeRestrictions_BODY', actionToUse: { count: {} } }] : undefined,
        },
      },
      visibilityConfig: visibility(name),
    })),
  ];
  const acl = new wafv2.CfnWebACL(scope, id, {
    scope: props.scope,
    defaultAction: { allow: {} },
    visibilityConfig: visibility(id),
    rules,
  });
  // WAF requires its log group's name to start with 'aws-waf-logs-'.
  const lg = logGroup(scope, `${id}Logs`, props.logsKey, props.retentionDays, `aws-waf-logs-snakepay-${id.toLowerCase()}-${scope.node.addr.slice(0, 8)}`);
  new wafv2.CfnLoggingConfiguration(scope, `${id}Logging`, {
    resourceArn: acl.attrArn,
    logDestinationConfigs: [lg.logGroupArn],
    // Credentials never reach the logs.
    redactedFields: [{ singleHeader: { Name: 'authorization' } }, { singleHeader: { Name: 'cookie' } }],
  });
  return acl;
}
