/**
 * Per-region container registry, a stack of its own so images can be pushed before the
 * cell's services are created (the first deployment of a cell would otherwise wait on
 * images that cannot exist yet). The cell finds the repositories by name, not by a
 * CloudFormation reference, so the two stacks deploy and roll back independently.
 */
import { Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import { Construct } from 'constructs';
import { cmk } from './common';
import { SERVICES } from './config';

/** Repository name of a service's image; `admin` is the one-off migration/key task. */
export const repositoryName = (service: string) => `snakepay/${service}`;
/** Prefix under which public images (the OpenTelemetry collector) are cached. */
export const PUBLIC_CACHE_PREFIX = 'ecr-public';

export class RegistryStack extends Stack {
  constructor(scope: Construct, id: string, props: StackProps) {
    super(scope, id, props);
    const key = cmk(this, 'ImagesKey', 'Snakepay container images');
    for (const name of [...SERVICES, 'admin']) {
      new ecr.Repository(this, `Repo-${name}`, {
        repositoryName: repositoryName(name),
        imageScanOnPush: true,
        imageTagMutability: ecr.TagMutability.IMMUTABLE,
        encryption: ecr.RepositoryEncryption.KMS,
        encryptionKey: key,
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [
          { description: 'untagged layers', tagStatus: ecr.TagStatus.UNTAGGED, maxImageAge: Duration.days(14) },
          { description: 'keep the last 100 releases', maxImageCount: 100 },
        ],
      });
    }
    // Public images come through a pull-through cache, so tasks pull only from this
    // region's ECR, through the VPC endpoints, never from the internet.
    new ecr.CfnPullThroughCacheRule(this, 'EcrPublicCache', { ecrRepositoryPrefix: PUBLIC_CACHE_PREFIX, upstreamRegistryUrl: 'public.ecr.aws' });
  }
}
