/**
 * The one place findings are waived. Every waiver carries its reason, which ends up next
 * to the resource in the template (checkov) or in cdk-nag's report, so a reviewer sees why
 * without opening this code. (cfn-lint's single waiver is in .cfnlintrc.yaml, with its reason.)
 */
import { CfnResource } from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { IConstruct } from 'constructs';

/** Waives a checkov check on the CloudFormation resource behind `scope`. */
export function skipCheckov(scope: IConstruct, id: string, comment: string): void {
  const res = cfnOf(scope);
  const meta = (res.getMetadata('checkov') as { skip: { id: string; comment: string }[] } | undefined) ?? { skip: [] };
  meta.skip.push({ id, comment });
  res.addMetadata('checkov', meta);
}

/** Waives cdk-nag rules on `scope` (and its children when `children` is true). */
export function skipNag(scope: IConstruct, rules: { id: string; reason: string; appliesTo?: string[] }[], children = true): void {
  NagSuppressions.addResourceSuppressions(scope, rules.map((r) => ({ id: r.id, reason: r.reason, appliesTo: r.appliesTo })), children);
}

function cfnOf(scope: IConstruct): CfnResource {
  if (scope instanceof CfnResource) return scope;
  const child = scope.node.defaultChild;
  if (child instanceof CfnResource) return child;
  throw new Error(`${scope.node.path} has no CloudFormation resource to attach a waiver to`);
}
