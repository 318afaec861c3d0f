#!/usr/bin/env node
/**
 * The CDK app: one global stack (us-east-1) and one independent stack per region.
 * cdk-nag's AwsSolutions and PCI DSS 3.2.1 packs run on every stack at synth; the check
 * script fails on any finding that is not suppressed (with its reason) in code.
 */
import { App } from 'aws-cdk-lib';
import { buildApp } from '../lib/app';

const app = new App();
buildApp(app, { nag: app.node.tryGetContext('nag') !== 'false' });
app.synth();
