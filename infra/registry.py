"""``images: build``: `pulumi up` builds the router (and server) images and pushes them to the cluster's registry.

For companies that pull only from their own registry. The images are built from this checkout's Dockerfiles
with the pulumi-docker-build provider (docker buildx on the machine running `pulumi up`) and pushed to:

- gke: an Artifact Registry Docker repository in the cluster's region, created here, which the GPU and system
  nodes' service account (the project's Compute Engine default account) may read;
- eks: one ECR repository per image, created here, scanned on push; the node role already has
  AmazonEC2ContainerRegistryReadOnly (infra/cloud/eks.py);
- existing, or any platform with ``imageRegistry``: that registry prefix; nothing is created, the push uses the
  credentials of ``docker login`` on this machine, and the cluster's nodes must be able to pull from it.

The chart gets each image as repository + digest, so a re-pushed tag can never change what runs. Which images:
the router always; the server (its CPU or CUDA variant, by the plan's GPUs) when ``engineType`` is server.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_docker_build as docker_build

from dsdeploy.images import REPO_ROOT, ProjectImage, package_version, project_image, server_image_key
from infra.stack_config import StackConfig

ARTIFACT_READER = "roles/artifactregistry.reader"
PLATFORMS = [
    docker_build.Platform.LINUX_AMD64
]  # "linux/amd64": every node pool the program creates is x86-64 (catalog machines, e2/m6i system pools)


def images_to_build(cfg: StackConfig, gpus_per_replica: int) -> list[ProjectImage]:
    keys = ["router"] + ([server_image_key(gpus_per_replica)] if cfg.engine_type == "server" else [])
    return [project_image(key) for key in keys]


class ProjectImages(pulumi.ComponentResource):
    """The registry (where the platform has one to create), one docker-build Image per image, chart overrides."""

    chart_values: dict[str, Any]
    references: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, cfg: StackConfig, gpus_per_replica: int, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dsdeploy:images:ProjectImages", name, None, opts)
        self._name, self._cfg = name, cfg
        version = package_version()
        wanted = images_to_build(cfg, gpus_per_replica)
        if cfg.image_registry:
            repositories = {
                image.key: pulumi.Output.from_input(f"{cfg.image_registry}/{image.name}") for image in wanted
            }
            auth: list[Any] = []  # docker login on this machine
        elif cfg.platform == "gke":
            repositories, auth = self._artifact_registry(wanted)
        elif cfg.platform == "eks":
            repositories, auth = self._ecr(wanted)
        else:  # stack_rules refuses images: build on existing without imageRegistry
            raise AssertionError("images: build on platform existing needs imageRegistry")
        self.references, built = {}, {}
        for image in wanted:
            tag = pulumi.Output.concat(repositories[image.key], ":", image.tag(version))
            built[image.key] = docker_build.Image(
                f"{name}-{image.key}",
                context={"location": str(REPO_ROOT)},
                dockerfile={"location": str(REPO_ROOT / image.dockerfile)},
                build_args=dict(image.build_args),
                platforms=PLATFORMS,
                labels={"org.opencontainers.image.version": version, "org.opencontainers.image.title": image.name},
                tags=[tag],
                push=True,
                registries=auth,
                cache_from=[{"registry": {"ref": tag}}],
                cache_to=[{"inline": {}}],
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.references[image.key] = pulumi.Output.concat(repositories[image.key], "@", built[image.key].digest)
        router = {"repository": repositories["router"], "digest": built["router"].digest}
        self.chart_values = {"router": {"image": router}}
        server = next((image for image in wanted if image.key != "router"), None)
        if server is not None:
            self.chart_values["engine"] = {
                "server": {"image": {"repository": repositories[server.key], "digest": built[server.key].digest}}
            }
        self.register_outputs({"references": self.references})

    def _artifact_registry(self, wanted: list[ProjectImage]) -> tuple[dict[str, pulumi.Output[str]], list[Any]]:
        import pulumi_gcp as gcp

        cfg, child = self._cfg, pulumi.ResourceOptions(parent=self)
        project: dict[str, Any] = {"project": cfg.gcp_project} if cfg.gcp_project else {}
        repo = gcp.artifactregistry.Repository(
            f"{self._name}-repository",
            repository_id=f"{cfg.cluster_name}-images",
            location=cfg.region,
            format="DOCKER",
            description="dsdeploy router and server images (built by pulumi up)",
            opts=child,
            **project,
        )
        number = gcp.organizations.get_project_output(project_id=cfg.gcp_project).number
        gcp.artifactregistry.RepositoryIamMember(
            f"{self._name}-node-reader",
            repository=repo.name,
            location=cfg.region,
            role=ARTIFACT_READER,
            member=pulumi.Output.concat("serviceAccount:", number, "-compute@developer.gserviceaccount.com"),
            opts=child,
            **project,
        )
        token = gcp.organizations.get_client_config_output().access_token
        auth = [
            {
                "address": f"{cfg.region}-docker.pkg.dev",
                "username": "oauth2accesstoken",
                "password": pulumi.Output.secret(token),
            }
        ]
        return {image.key: pulumi.Output.concat(repo.registry_uri, "/", image.name) for image in wanted}, auth

    def _ecr(self, wanted: list[ProjectImage]) -> tuple[dict[str, pulumi.Output[str]], list[Any]]:
        import pulumi_aws as aws

        cfg = self._cfg
        # Its own explicit provider, like the cluster's: the repositories land in dsdeploy:region.
        region = aws.Provider(f"{self._name}-aws", region=cfg.region, opts=pulumi.ResourceOptions(parent=self))
        on_region = pulumi.ResourceOptions(parent=self, provider=region)
        repositories: dict[str, pulumi.Output[str]] = {}
        for image in {i.name: i for i in wanted}.values():
            repo = aws.ecr.Repository(
                f"{self._name}-{image.name}",
                name=f"{cfg.cluster_name}/{image.name}",
                image_tag_mutability="MUTABLE",
                image_scanning_configuration={"scan_on_push": True},
                encryption_configurations=[{"encryption_type": "AES256"}],
                force_delete=not cfg.deletion_protection,
                opts=on_region,
            )
            for other in wanted:
                if other.name == image.name:
                    repositories[other.key] = repo.repository_url
        token = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOutputOptions(provider=region)
        )
        # One login covers every repository of the account's registry (HOST/...): the address is its host.
        address = repositories["router"].apply(lambda url: url.split("/", 1)[0])
        auth = [{"address": address, "username": token.user_name, "password": pulumi.Output.secret(token.password)}]
        return repositories, auth
