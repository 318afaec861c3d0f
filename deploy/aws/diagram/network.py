"""Draws Snakepay's AWS network diagram from the synthesized CloudFormation templates.

Usage: python network.py CDK_OUT_DIR OUTPUT_DIR

The picture is built from what `cdk synth` produced, not from a hand-kept list: the regions
are the regional stacks, the shard clusters and services are counted in their templates, the
NAT gateways and AZs come from the subnets. Each drawn node also declares which CloudFormation
resource types it stands for; the script exits non-zero when a template holds a resource type
that no drawn node shows, so the diagram cannot silently fall behind the infrastructure.

Writes OUTPUT_DIR/network.png and OUTPUT_DIR/network.svg (icons embedded, so the SVG renders
anywhere).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.aws.compute import EC2ContainerRegistry, ElasticContainerServiceService, Fargate, Lambda
from diagrams.aws.database import Aurora, AuroraInstance, ElasticacheForRedis
from diagrams.aws.general import Users
from diagrams.aws.integration import MQ, SimpleNotificationServiceSnsTopic
from diagrams.aws.management import AutoScaling, Cloudtrail, Cloudwatch, CloudwatchAlarm, CloudwatchLogs, Config
from diagrams.aws.network import (
    APIGateway,
    CloudFront,
    ElbNetworkLoadBalancer,
    Endpoint,
    InternetGateway,
    NATGateway,
    PrivateSubnet,
    PublicSubnet,
    Route53,
    VPCFlowLogs,
)
from diagrams.aws.security import (
    CertificateManager,
    Guardduty,
    IdentityAndAccessManagementIamRole,
    KeyManagementService,
    Macie,
    SecretsManager,
    Shield,
    WAF,
)
from diagrams.aws.storage import SimpleStorageServiceS3Bucket
from diagrams.generic.network import Firewall
from diagrams.onprem.network import Internet

# Template entries that are not AWS resources (CDK's own version metadata).
NOT_RESOURCES = {"AWS::CDK::Metadata"}

SHOWN: set[str] = set()


def shows(node, *types: str):
    """Records which resource types a drawn node stands for and returns the node."""
    SHOWN.update(types)
    return node


def load(cdk_out: Path) -> tuple[dict, list[dict]]:
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    stacks = []
    for name, art in sorted(manifest["artifacts"].items()):
        if art.get("type") != "aws:cloudformation:stack":
            continue
        region = art["environment"].rsplit("/", 1)[-1]
        template = json.loads((cdk_out / art["properties"]["templateFile"]).read_text())
        stacks.append({"name": name, "region": region, "template": template})
    global_stacks = [s for s in stacks if s["name"].endswith("-Global")]
    if len(global_stacks) != 1:
        sys.exit(f"expected exactly one global stack, found {[s['name'] for s in global_stacks]}")
    # A region's registry stack is drawn inside that region's cell.
    registries = {s["region"]: s for s in stacks if s["name"].endswith("-Registry")}
    cells = [s for s in stacks if s not in global_stacks and not s["name"].endswith("-Registry")]
    for cell in cells:
        cell["registry"] = registries.get(cell["region"])
    return global_stacks[0], cells


def of_type(template: dict, type_: str) -> list[dict]:
    return [r for r in template["Resources"].values() if r["Type"] == type_]


def output(template: dict, key: str) -> str | None:
    out = template.get("Outputs", {}).get(key)
    return out["Value"] if out else None


def draw(cdk_out: Path, out_dir: Path) -> None:
    glob_stack, cells = load(cdk_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = {"fontsize": "22", "labelloc": "t", "pad": "0.4", "nodesep": "0.35", "ranksep": "0.7", "splines": "spline", "compound": "true"}
    node_attr = {"fontsize": "11"}
    cluster_attr = {"fontsize": "13"}

    for fmt in ("png", "svg"):
        SHOWN.clear()
        with Diagram(
            "Snakepay on AWS: global edge and independent regional cells",
            filename=str(out_dir / "network"),
            outformat=fmt,
            show=False,
            direction="TB",
            graph_attr=graph,
            node_attr=node_attr,
        ):
            users = Users("merchants, shoppers,\nmobile clients")
            staff = Users("staff and internal systems\n(inside the VPC)")
            processors = Internet("card processors\n(allow-list our NAT IPs)")

            with Cluster(f"Global edge ({glob_stack['region']}): one stack", graph_attr=cluster_attr):
                dns = shows(Route53("Route 53\nlatency records +\nhealth checks"), "AWS::Route53::RecordSet", "AWS::Route53::HealthCheck")
                edge_waf = shows(WAF("WAF (CloudFront)\nmanaged rules + rate"), "AWS::WAFv2::WebACL", "AWS::WAFv2::LoggingConfiguration")
                shield = Shield("Shield Standard")
                cdn = shows(CloudFront("CloudFront\nTLS 1.2+, OAC"), "AWS::CloudFront::Distribution", "AWS::CloudFront::OriginAccessControl")
                certs = shows(CertificateManager("ACM certificates\n(DNS-validated)"), "AWS::CertificateManager::Certificate")
                web_bucket = shows(SimpleStorageServiceS3Bucket("S3 web assets\n(KMS, private)"), "AWS::S3::Bucket", "AWS::S3::BucketPolicy")
                health_alarm = shows(CloudwatchAlarm("health-check alarms"), "AWS::CloudWatch::Alarm")
                users >> dns
                users >> Edge(label="HTTPS") >> edge_waf >> cdn
                shield - cdn
                certs - cdn
                cdn >> Edge(label="static") >> web_bucket

            for cell in cells:
                t = cell["template"]
                region = cell["region"]
                code = output(t, "RegionCode") or "?"
                subnets = of_type(t, "AWS::EC2::Subnet")
                azs = sorted({s["Properties"]["AvailabilityZone"] for s in subnets})
                clusters = of_type(t, "AWS::RDS::DBCluster")
                shards = sorted(c["Properties"]["DBClusterIdentifier"] for c in clusters if "-shard-" in c["Properties"]["DBClusterIdentifier"])
                control = [c["Properties"]["DBClusterIdentifier"] for c in clusters if c["Properties"]["DBClusterIdentifier"].endswith("-control")]
                instances_per_cluster = len(of_type(t, "AWS::RDS::DBInstance")) // max(1, len(clusters))
                services = [s["Properties"]["ServiceName"] for s in of_type(t, "AWS::ECS::Service")]
                nats = of_type(t, "AWS::EC2::NatGateway")
                endpoints = of_type(t, "AWS::EC2::VPCEndpoint")

                with Cluster(f"Region {region} (cell {code}): independent stack, no cross-region references", graph_attr=cluster_attr):
                    regional_waf = shows(WAF("WAF (regional)\nmanaged rules + rate"), "AWS::WAFv2::WebACL", "AWS::WAFv2::WebACLAssociation", "AWS::WAFv2::LoggingConfiguration")
                    ext_api = shows(
                        APIGateway(f"External API\nREST, regional\napi + {region}.api"),
                        "AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage", "AWS::ApiGateway::Deployment", "AWS::ApiGateway::Method",
                        "AWS::ApiGateway::Resource", "AWS::ApiGateway::RequestValidator", "AWS::ApiGateway::DomainName",
                        "AWS::ApiGateway::BasePathMapping", "AWS::ApiGateway::VpcLink", "AWS::ApiGateway::Account",
                    )
                    int_api = shows(APIGateway("Internal API\nREST, private"), "AWS::ApiGateway::RestApi")
                    ecr = shows(EC2ContainerRegistry("ECR (registry stack)\nKMS, scan on push,\n+ pull-through cache"), "AWS::ECR::Repository", "AWS::ECR::PullThroughCacheRule", "AWS::KMS::Key")

                    with Cluster(f"VPC {t['Resources'][next(k for k, r in t['Resources'].items() if r['Type'] == 'AWS::EC2::VPC')]['Properties']['CidrBlock']}", graph_attr=cluster_attr):
                        igw = shows(InternetGateway("internet gateway\n+ route tables"), "AWS::EC2::InternetGateway", "AWS::EC2::VPCGatewayAttachment",
                                    "AWS::EC2::Route", "AWS::EC2::RouteTable", "AWS::EC2::SubnetRouteTableAssociation", "AWS::EC2::VPC")
                        flow = shows(VPCFlowLogs("flow logs\n(all traffic)"), "AWS::EC2::FlowLog")
                        sgs = shows(Firewall("security groups\n(one per service/store,\nno default egress)"),
                                    "AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")
                        nat_nodes = []
                        for az in azs:
                            with Cluster(f"AZ {az}", graph_attr={"fontsize": "12", "bgcolor": "#f6f6f6"}):
                                with Cluster("public subnet"):
                                    shows(PublicSubnet("public subnet\n(NAT only)"), "AWS::EC2::Subnet")
                                    nat = shows(NATGateway("NAT gateway\n+ Elastic IP"), "AWS::EC2::NatGateway", "AWS::EC2::EIP", "AWS::EC2::Subnet")
                                    nat_nodes.append(nat)
                                with Cluster("private subnet"):
                                    shows(PrivateSubnet("Fargate tasks\n(no public IP)"), "AWS::EC2::Subnet")
                                with Cluster("isolated subnet"):
                                    shows(PrivateSubnet("data ENIs\n(no route out)"), "AWS::EC2::Subnet")
                        assert len(nat_nodes) == len(nats), "one NAT per AZ"
                        vpce = shows(Endpoint(f"{len(endpoints)} VPC endpoints\n(ECR, logs, KMS, secrets,\nSTS, X-Ray, execute-api, S3)"), "AWS::EC2::VPCEndpoint")
                        nlb = shows(ElbNetworkLoadBalancer("internal NLB\nTLS listeners, 3 AZs"),
                                    "AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::TargetGroup")

                        with Cluster("ECS Fargate services (tasks in every AZ, auto scaling)", graph_attr=cluster_attr):
                            svc_nodes = {
                                name: shows(ElasticContainerServiceService(name), "AWS::ECS::Service", "AWS::ECS::TaskDefinition")
                                for name in services
                            }
                            shows(Fargate("ECS cluster\n(Container Insights)\n+ admin one-off task"), "AWS::ECS::Cluster", "AWS::ECS::ClusterCapacityProviderAssociations", "AWS::ECS::TaskDefinition")
                            shows(AutoScaling("auto scaling\nCPU, memory,\nqueue depth"), "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy")

                        with Cluster("data (isolated subnets, multi-AZ, KMS)", graph_attr=cluster_attr):
                            control_db = shows(Aurora(f"Aurora PostgreSQL\ncontrol ({instances_per_cluster} instances)"),
                                               "AWS::RDS::DBCluster", "AWS::RDS::DBInstance", "AWS::RDS::DBSubnetGroup", "AWS::RDS::DBClusterParameterGroup")
                            shard_nodes = [
                                shows(AuroraInstance(f"shard {i}\n({instances_per_cluster} instances, PITR)"), "AWS::RDS::DBCluster", "AWS::RDS::DBInstance")
                                for i, _ in enumerate(shards)
                            ]
                            redis = shows(ElasticacheForRedis("ElastiCache Redis\nTLS + AUTH, failover"), "AWS::ElastiCache::ReplicationGroup", "AWS::ElastiCache::SubnetGroup")
                            broker = shows(MQ("Amazon MQ RabbitMQ\n3-node cluster"), "AWS::AmazonMQ::Broker")
                        assert control, "a control database"

                    with Cluster("security", graph_attr=cluster_attr):
                        shows(KeyManagementService("KMS keys (rotated)\ndata, card-data,\nsecrets, logs, ops, audit"), "AWS::KMS::Key")
                        shows(SecretsManager("Secrets Manager\n(CMK)"), "AWS::SecretsManager::Secret", "AWS::SecretsManager::SecretTargetAttachment")
                        shows(IdentityAndAccessManagementIamRole("IAM task roles\n(least privilege)"), "AWS::IAM::Role", "AWS::IAM::Policy")
                        shows(Guardduty("GuardDuty\n(S3, RDS, Fargate)"), "AWS::GuardDuty::Detector")
                        shows(Config("AWS Config\n+ managed rules"), "AWS::Config::ConfigurationRecorder", "AWS::Config::DeliveryChannel", "AWS::Config::ConfigRule")
                        shows(Cloudtrail("CloudTrail\n(validated, KMS)"), "AWS::CloudTrail::Trail")
                        shows(Macie("Macie"), "AWS::Macie::Session")
                        shows(SimpleStorageServiceS3Bucket("S3 audit + access logs"), "AWS::S3::Bucket", "AWS::S3::BucketPolicy")
                        shows(Lambda("deploy-time handler:\nclose default SG"), "AWS::Lambda::Function", "Custom::VpcRestrictDefaultSG")

                    with Cluster("observability", graph_attr=cluster_attr):
                        shows(Cloudwatch("CloudWatch dashboard\nX-Ray traces"), "AWS::CloudWatch::Dashboard")
                        alarms = shows(CloudwatchAlarm("alarms"), "AWS::CloudWatch::Alarm")
                        shows(CloudwatchLogs("logs (KMS, 400 d)"), "AWS::Logs::LogGroup", "AWS::Logs::ResourcePolicy")
                        topic = shows(SimpleNotificationServiceSnsTopic("SNS alarms (KMS)"), "AWS::SNS::Topic", "AWS::SNS::TopicPolicy")
                        alarms >> topic

                    # Traffic.
                    dns >> Edge(label=f"latency: {region}", style="dashed") >> ext_api
                    cdn >> Edge(label="/checkout/*", style="dashed") >> ext_api
                    regional_waf - ext_api
                    ext_api >> Edge(label="VPC link") >> nlb
                    staff >> Edge(label="execute-api\nendpoint") >> int_api >> Edge(label="VPC link") >> nlb
                    for name in ("external-api", "web", "internal-api"):
                        if name in svc_nodes:
                            nlb >> svc_nodes[name]
                    for name in ("external-api", "internal-api", "integration"):
                        if name in svc_nodes:
                            svc_nodes[name] >> control_db
                            for shard in shard_nodes:
                                svc_nodes[name] >> Edge(label="IAM auth, TLS") >> shard
                            svc_nodes[name] >> redis
                            svc_nodes[name] >> Edge(label="AMQPS") >> broker
                    if "integration" in svc_nodes:
                        for nat in nat_nodes:
                            svc_nodes["integration"] >> Edge(color="darkorange") >> nat
                    for nat in nat_nodes:
                        nat >> Edge(color="darkorange", label="443 only") >> processors
                    nat_nodes[0] - igw
                    ecr >> Edge(style="dotted", label="images") >> vpce
                    flow - sgs

                health_alarm >> Edge(style="dotted") >> ext_api

        if fmt == "svg":
            embed_icons(out_dir / "network.svg")

    templates = [glob_stack["template"]] + [c["template"] for c in cells] + [c["registry"]["template"] for c in cells if c.get("registry")]
    missing = sorted(set().union(*(type_set(t) for t in templates)) - SHOWN - NOT_RESOURCES)
    if missing:
        sys.exit("the diagram does not show these resource kinds from the templates:\n  " + "\n  ".join(missing))
    print(f"diagram: {len(SHOWN)} resource kinds shown, every kind in {len(templates)} templates covered")


def type_set(template: dict) -> set[str]:
    return {r["Type"] for r in template["Resources"].values()}


def embed_icons(svg: Path) -> None:
    """Inlines the icon PNGs (absolute paths into the venv) so the SVG is self-contained and stable."""
    text = svg.read_text()

    def inline(m: re.Match) -> str:
        path = Path(m.group(2))
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{m.group(1)}="data:image/png;base64,{data}"'

    text = re.sub(r'(xlink:href|href)="(/[^"]+\.png)"', inline, text)
    # diagrams names nodes with random UUIDs; number them instead so the SVG is reproducible.
    ids: dict[str, str] = {}
    text = re.sub(r"\b[0-9a-f]{32}\b", lambda m: ids.setdefault(m.group(0), f"node{len(ids) + 1}"), text)
    svg.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    draw(Path(sys.argv[1]), Path(sys.argv[2]))
