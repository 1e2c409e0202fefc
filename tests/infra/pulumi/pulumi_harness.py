"""Run the Pulumi program under mocks and record every resource, its inputs and which inputs were secret.

Mocks are installed before the program modules are imported (the program is imported lazily inside
:func:`run_program`), and every run gets a fresh mocks context. The run function carries
``@pulumi.runtime.test`` so that a failure inside ``apply`` fails the test instead of vanishing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"
CA_DATA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
MOCK_TOKEN = "mock-registry-token-0123456789"


def image_digest(resource_name: str) -> str:
    """The digest the mocks give a docker-build Image: distinct per resource, stable across runs."""
    return "sha256:" + hashlib.sha256(resource_name.encode()).hexdigest()


@dataclass
class Registered:
    """One resource the program declared."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str
    secret_paths: set[str]


@dataclass
class ProgramRun:
    """What one program run declared and exported."""

    resources: list[Registered] = field(default_factory=list)
    dependencies: dict[str, list[str]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    chart_values: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_contains: str = "") -> Registered:
        found = [r for r in self.of_type(typ) if name_contains in r.name]
        assert len(found) == 1, f"expected one {typ} named *{name_contains}*, got {[r.name for r in found]}"
        return found[0]


def _secret_paths(node: Any, path: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get(SIG_KEY) == SECRET_SIG:
            return {path}
        for key, value in node.items():
            found |= _secret_paths(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found |= _secret_paths(value, f"{path}[{index}]")
    return found


def _unwrap(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get(SIG_KEY) == SECRET_SIG:
            return _unwrap(node.get("value"))
        return {key: _unwrap(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_unwrap(value) for value in node]
    return node


class RecordingMocks(pulumi.runtime.Mocks):
    """Echo inputs back as outputs, plus the computed fields the program reads (endpoint, CA, ARNs)."""

    def __init__(self, run: ProgramRun):
        self.run = run

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "gcp:container/cluster:Cluster":
            outputs.update(endpoint="203.0.113.10", masterAuth={"clusterCaCertificate": CA_DATA})
        elif args.typ == "aws:eks/cluster:Cluster":
            outputs.update(
                endpoint="https://ABC.gr7.us-east-1.eks.amazonaws.com", certificateAuthority={"data": CA_DATA}
            )
        elif args.typ == "aws:iam/role:Role":
            outputs.setdefault("arn", f"arn:aws:iam::123456789012:role/{args.name}")
            outputs.setdefault("name", args.name)
        elif args.typ == "aws:eks/nodeGroup:NodeGroup":
            outputs.setdefault("nodeGroupName", args.name)
        elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs.setdefault("latestVersion", 1)
        elif args.typ == "gcp:artifactregistry/repository:Repository":
            project = args.inputs.get("project", "mock-project")
            outputs["registryUri"] = f"{args.inputs['location']}-docker.pkg.dev/{project}/{args.inputs['repositoryId']}"
        elif args.typ == "aws:ecr/repository:Repository":
            outputs.update(
                registryId="123456789012",
                repositoryUrl=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{args.inputs['name']}",
            )
        elif args.typ == "docker-build:index:Image":
            outputs["digest"] = image_digest(args.name)
        outputs.setdefault("name", args.inputs.get("name", args.name))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "names": ["us-east-1a", "us-east-1b", "us-east-1c"],
                "zoneIds": ["use1-az1", "use1-az2", "use1-az4"],
            }
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": "987654321098", "projectId": args.args.get("projectId") or "mock-project"}
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": MOCK_TOKEN}
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": MOCK_TOKEN,
                "proxyEndpoint": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
            }
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Records each registration's raw wire form (to see secrets) and its dependencies."""

    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.run = mocks.run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        raw = json_format.MessageToDict(request.object)
        inputs = _unwrap(pulumi.runtime.rpc.deserialize_properties(request.object))
        self.run.resources.append(Registered(request.type, request.name, inputs, request.provider, _secret_paths(raw)))
        self.run.dependencies[request.name] = [urn.rsplit("::", 1)[-1] for urn in request.dependencies]
        return response


def run_program(
    raw_config: dict[str, Any], secrets: dict[str, str] | None = None, run: ProgramRun | None = None
) -> ProgramRun:
    """Validate ``raw_config`` and run ``build`` once under fresh mocks; resolve and record outputs.

    Pass ``run`` to inspect what was declared when the program raises.
    """
    run = run if run is not None else ProgramRun()
    mocks = RecordingMocks(run)
    pulumi.runtime.set_mocks(mocks, project="dsdeploy", stack="test", preview=False, monitor=RecordingMonitor(mocks))
    secrets = secrets or {}

    from infra.program import build
    from infra.stack_config import validate_stack_config

    @pulumi.runtime.test
    def program():
        cfg = validate_stack_config(raw_config, set(secrets))
        outputs = build(cfg, {key: pulumi.Output.secret(value) for key, value in secrets.items()})
        keys = sorted(outputs)
        resolved = [pulumi.Output.from_input(outputs[key]) for key in keys]

        async def secret_flags() -> list[bool]:
            return [await out.is_secret() for out in resolved]

        flags = pulumi.Output.from_input(secret_flags())

        def record(args: list[Any]) -> None:
            *values, secret = args
            run.outputs.update(dict(zip(keys, values, strict=True)))
            run.secret_outputs.update(key for key, is_secret in zip(keys, secret, strict=True) if is_secret)

        return pulumi.Output.all(*resolved, flags).apply(record)

    program()
    return run
