"""Command line for build.sh: `python -m sagemaker_deploy --config PATH --state-dir DIR COMMAND ...`.

State between commands lives in STATE_DIR/<stage>/: images.json (push: what was pushed, by digest),
registration.json (register: the summary CodeBuild keeps as an artifact), endpoints.env (the variables client
apps read, e.g. XGBOOST_RISK_ENDPOINT=xgboost-risk-endpoint), deployment.json (deploy), artifacts/<model>/model.tar.gz
(package) and artifacts.json (upload: each model's S3 URI and sha256).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from . import DeployError, alarms, artifacts, batch, config as configs, endpoints, gpu_hosts, monitor, \
    plan as plans, pushes, say, smoke, stack, teardown, verify
from . import register as registration
from .aws import Aws
from .registry import ecr_host, ensure_repository, login_password, manifest_digest


class Stage:
    """One config file, its AWS session and its state directory."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry_run = args.dry_run
        self.config = configs.load(args.config)
        self.name = self.config["stage"]
        region = self.config.get("region") or args.region
        if not region:
            raise DeployError(f"no AWS region: set \"region\" in {args.config} or AWS_REGION")
        self.aws = Aws(region, dry_run=self.dry_run, call_log=args.call_log)
        if self.dry_run:
            say("dry run: AWS calls are printed, not sent; reads answer 'absent', so the plan shows a first deployment")
        self.state = args.state_dir / self.name
        self.local_tags = dict(item.partition("=")[::2] for item in args.local_tag)
        self.locks = dict(item.partition("=")[::2] for item in args.lock)
        self._account: str | None = None

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = self.aws.account()
        return self._account

    def filled(self) -> dict:
        """The config with its placeholders filled, {platform.NAME} from the platform stack's outputs."""
        outputs = stack.outputs(self.aws, self.name) if configs.platform_outputs_used(self.config) else {}
        return configs.fill(self.config, self.account, self.aws.region, self.name, outputs)

    def registry(self) -> str:
        return self.args.registry or ecr_host(self.account, self.aws.region)

    def write(self, file_name: str, content: dict | str) -> Path:
        path = self.state / file_name
        if self.dry_run:
            return path
        self.state.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2, sort_keys=True) + "\n")
        return path

    def images(self) -> dict:
        """What push recorded; in a dry run without a push, placeholders for the digests."""
        path = self.state / "images.json"
        if not path.exists():
            if not self.dry_run:
                raise DeployError(f"no pushed images for stage {self.name} ({path} is missing): "
                                  "run ./build.sh push first")
            host, version = self.registry(), self.args.version or "<tag>"
            return {"version": version, "account": self.account, "families": {
                name: {"uri": f"{host}/{family['image']['repository']}@sha256:<pushed-digest>", "registry": host,
                       "tag": version, "labels": self.local_labels(name)}
                for name, family in self.config["families"].items()}}
        images = json.loads(path.read_text())
        missing = sorted(set(self.config["families"]) - set(images["families"]))
        if missing:
            raise DeployError(f"{path} has no image for {', '.join(missing)}: run ./build.sh push again")
        plans.check_hosts(self.config, images["families"])
        if not self.dry_run and images["account"] != self.account:
            raise DeployError(f"the images were pushed to account {images['account']}, but these credentials are "
                              f"for account {self.account}: use the same account, or push again")
        return images

    def uploaded(self) -> dict:
        """What upload recorded; in a dry run without an upload, placeholders for the content hashes."""
        path = self.state / "artifacts.json"
        if path.exists():
            return json.loads(path.read_text())
        if not self.dry_run:
            return {}
        bucket = self.filled().get("model_bucket", "<model-bucket>")
        return {model["name"]: {"uri": f"s3://{bucket}/{artifacts.PREFIX}/{model['name']}/<sha256>/"
                                       f"{artifacts.ARCHIVE}"}
                for _, _, model in artifacts.models_with_source(self.config)}

    def local_image(self, family_name: str, tag: str | None = None) -> str:
        """The local image build.sh pushes for a family: local_image:TAG (TAG as build.sh tags that build)."""
        image = self.config["families"][family_name]["image"]
        return f"{image['local_image']}:{tag or self.local_tags.get(image.get('build'), self.args.version)}"

    def local_labels(self, family_name: str, tag: str | None = None) -> dict | None:
        """The local image's labels (docker image inspect); in a dry run where it is not built, the labels
        build.sh would give it from its lock file; None when neither is known."""
        reference = self.local_image(family_name, tag)
        labels = gpu_hosts.image_labels(reference)
        lock = self.locks.get(self.config["families"][family_name]["image"].get("build"))
        if labels is None and self.dry_run and lock:
            say(f"dry run: {reference} is not built; its labels are read from {lock}, as build.sh labels it")
            labels = gpu_hosts.lock_labels(Path(lock))
        return labels

    def plan(self) -> tuple[dict, dict, plans.Plan]:
        images = self.images()
        filled = self.filled()
        if any(artifacts.models_with_source(filled)):
            filled = artifacts.apply(filled, self.uploaded())
        return filled, images, plans.build(filled, images["families"])


def cmd_check(stage: Stage) -> None:
    families = stage.config["families"]
    say(f"{stage.args.config} is valid: stage {stage.name}, " + ", ".join(
        f"{name} ({family['mode']}, {len(family['models'])} model(s) on {family['instance_type']})"
        for name, family in families.items()))


def cmd_targets(stage: Stage) -> None:
    for family in stage.config["families"].values():
        if "build" in family["image"]:
            print(family["image"]["build"])


def cmd_trainable(stage: Stage) -> None:
    """The build targets whose models have a source directory to train into (build.sh train)."""
    for name in dict.fromkeys(family["image"].get("build") for _, family, _ in
                              artifacts.models_with_source(stage.config)):
        if name:
            print(name)


def cmd_check_images(stage: Stage) -> None:
    """Refuses, before anything is pushed, a local image that its GPU hosts cannot run (build.sh push runs it)."""
    images = {}
    for name, family in stage.config["families"].items():
        labels = stage.local_labels(name)
        if labels is None:
            raise DeployError(f"there is no local image {stage.local_image(name)}: run './build.sh build "
                              f"{family['image'].get('build', 'IMAGE')}' first (or set IMAGE_TAG)")
        images[name] = {"tag": stage.local_image(name).rpartition(":")[2], "labels": labels}
    for line in plans.check_hosts(stage.config, images):
        say(f"host {line}")


def cmd_push_plan(stage: Stage) -> None:
    """Creates the missing ECR repositories; prints the registry, then per family the local image name, the
    repository and the build.sh build target ('-' for none) for build.sh to tag and push."""
    filled = stage.filled()
    ecr = stage.aws.client("ecr")
    print(f"registry {stage.registry()} {stage.aws.region}")
    for name, family in filled["families"].items():
        image = family["image"]
        created = ensure_repository(ecr, image["repository"], filled["kms_key_arn"], plans.tags(filled))
        say(("created" if created else "found") + f" ECR repository {image['repository']}")
        print(f"image {name} {image['local_image']} {image['repository']} {image.get('build', '-')}")


def cmd_record_push(stage: Stage) -> None:
    """Reads the pushed digests back from the registry and records them for register."""
    tags = dict(item.partition("=")[::2] for item in stage.args.tag)
    missing = sorted(set(stage.config["families"]) - set(tags))
    if missing:
        raise DeployError(f"record-push needs --tag FAMILY=TAG for {', '.join(missing)}")
    host = stage.registry()
    password = login_password(stage.aws.client("ecr"))
    families = {}
    for name, family in stage.config["families"].items():
        # The labels are the local build's: push may have given it another tag than build.sh did (pushes.py).
        repository, tag = family["image"]["repository"], tags[name]
        digest = manifest_digest(host, repository, tag, password, dry_run=stage.dry_run)
        families[name] = {"repository": repository, "tag": tag, "digest": digest, "registry": host,
                          "uri": f"{host}/{repository}@{digest}", "labels": stage.local_labels(name)}
        say(f"pushed {host}/{repository}:{tag} is {digest}")
    path = stage.write("images.json", {"version": stage.args.version, "account": stage.account,
                                       "region": stage.aws.region, "families": families})
    print(path)


def cmd_push_tag(stage: Stage) -> None:
    """Prints "push TAG" or "reuse TAG" for one family's image (see pushes.py)."""
    (family, tag), = (item.partition("=")[::2] for item in stage.args.tag)
    repository = stage.config["families"][family]["image"]["repository"]
    registry = None if stage.dry_run else pushes.Registry(stage.registry(), login_password(stage.aws.client("ecr")))
    action, chosen = pushes.choose(registry, repository, tag, stage.args.image_id,
                                   json.loads(stage.args.labels or "{}") or {})
    print(action, chosen)


def _package(stage: Stage) -> list[artifacts.Artifact]:
    packaged = []
    for _, _, model in artifacts.models_with_source(stage.config):
        source = Path(model["source"])
        if stage.dry_run and not source.exists():
            packaged.append(artifacts.Artifact(model["name"], source, stage.state / "artifacts" / model["name"] /
                                               artifacts.ARCHIVE, "<sha256>"))
        else:
            packaged.append(artifacts.package(model["name"], source, stage.state / "artifacts",
                                              write=not stage.dry_run))
        print(f"+ package {source}/ -> {packaged[-1].archive} (sha256 {packaged[-1].sha256})", file=sys.stderr)
    if not packaged:
        say(f"no model in {stage.args.config} has a 'source' directory: nothing to package")
    return packaged


def cmd_package(stage: Stage) -> None:
    for artifact in _package(stage):
        print(artifact.archive)


def cmd_upload(stage: Stage) -> None:
    filled = stage.filled()
    if "model_bucket" not in filled:
        raise DeployError(f"{stage.args.config} names no \"model_bucket\" to upload the model artifacts to")
    s3 = stage.aws.client("s3")
    uploaded = stage.uploaded() if not stage.dry_run else {}
    for artifact in _package(stage):
        uri, sent = artifacts.upload(s3, artifact, filled["model_bucket"], filled["kms_key_arn"],
                                     plans.tags(filled, model=artifact.name))
        artifacts.say_result(artifact, uri, sent)
        uploaded[artifact.name] = {"uri": uri, "sha256": artifact.sha256, "source": str(artifact.source)}
    print(stage.write("artifacts.json", uploaded))


def cmd_register(stage: Stage) -> None:
    filled, images, plan = stage.plan()
    registration.check_role(stage.aws.client("iam"), filled["execution_role_arn"])
    summary = registration.register(stage.aws.client("sagemaker"), plan)
    rows = registration.model_info_rows(filled, images, stage.uploaded())
    if rows and not stage.dry_run:
        try:
            table = stack.outputs(stage.aws, stage.name).get("XgboostModelInfoTable")
        except DeployError as error:
            say(f"the model-info rows are not written: {error}")
            table = None
        if table:
            registration.put_model_info(stage.aws.client("dynamodb"), table, rows)
    summary.update(stage=stage.name, region=stage.aws.region, account=stage.account, version=images["version"],
                   images=images["families"], endpoints=plan.env())
    stage.write("endpoints.env", "".join(f"{key}={value}\n" for key, value in sorted(plan.env().items())))
    print(stage.write("registration.json", summary))


def cmd_deploy(stage: Stage) -> None:
    filled, images, plan = stage.plan()
    sagemaker, autoscaling = stage.aws.client("sagemaker"), stage.aws.client("application-autoscaling")
    cloudwatch = stage.aws.client("cloudwatch")
    deployment = filled.get("deployment", {})
    results = []
    try:
        for endpoint in plan.endpoints:
            tags = plans.tags(filled, images["families"][endpoint.family]["tag"], family=endpoint.family)
            rollback = alarms.put(cloudwatch, filled, endpoint.family, endpoint.endpoint_name, tags)
            settings = {**deployment, "rollback_alarms": deployment.get("rollback_alarms", []) + rollback}
            action = endpoints.deploy(sagemaker, autoscaling, endpoint, settings, tags, dry_run=stage.dry_run)
            results.append({"endpoint": endpoint.endpoint_name, "config": endpoint.config_name, "action": action})
    finally:
        path = stage.write("deployment.json", {"stage": stage.name, "version": images["version"],
                                               "endpoints": results, "complete": len(results) == len(plan.endpoints)})
    print(path)


def cmd_smoke(stage: Stage) -> None:
    filled, _, _ = stage.plan()
    failures = smoke.run(stage.aws.client("s3"), stage.aws.client("sagemaker-runtime"), filled, stage.dry_run)
    if failures:
        raise DeployError("the smoke test failed:\n  " + "\n  ".join(failures))


def cmd_destroy(stage: Stage) -> None:
    removed = teardown.destroy(stage.aws.client("sagemaker"), stage.aws.client("application-autoscaling"),
                               stage.aws.client("cloudwatch"), stage.filled(), stage.dry_run)
    print(stage.write("destroyed.json", removed))


def cmd_batch(stage: Stage) -> None:
    filled, images, _ = stage.plan()
    try:
        family_name, member = plans.find_member(filled, stage.args.model)
    except KeyError:
        names = [m["name"] for family in filled["families"].values() for m in family["models"]]
        raise DeployError(f"no model '{stage.args.model}' in {stage.args.config} (models: {', '.join(names)})") \
            from None
    settings = filled.get("batch")
    if settings is None:
        raise DeployError(f"{stage.args.config} has no \"batch\" section: add input_prefix and output_prefix")
    registration.check_role(stage.aws.client("iam"), filled["execution_role_arn"])
    image = images["families"][family_name]
    model = plans.single_model(filled, family_name, member, image)
    sagemaker = stage.aws.client("sagemaker")
    registration.ensure_model(sagemaker, model)
    request = batch.job_request(filled, family_name, model.name, member["name"],
                                stage.args.input or settings["input_prefix"],
                                stage.args.output or settings["output_prefix"], image["tag"],
                                image_labels=image.get("labels"))
    status = batch.start(sagemaker, request, wait=stage.args.wait, dry_run=stage.dry_run)
    print(json.dumps({"job": request["TransformJobName"], "model": model.name, "status": status}))


def cmd_monitor(stage: Stage) -> None:
    """Model Monitor data quality on every captured SingleModel endpoint (monitor.py); writes monitoring.json."""
    summary = monitor.run(stage.aws, stage.filled(), stage.dry_run)
    print(stage.write("monitoring.json", {"stage": stage.name, "endpoints": summary}))


def cmd_verify(stage: Stage) -> None:
    """The stage's HIPAA compliance verification: one line per check; fails when a check fails."""
    results = verify.run(stage.aws, stage.config, stage.name)
    for result in results:
        judged = not stage.dry_run or result.status == "MANUAL"
        print(result.line() if judged else f"{'-':<6} {result.check}: not judged (dry run)")
    failed = [result for result in results if result.status == "FAIL"]
    if failed and not stage.dry_run:
        raise DeployError(f"the stage does not pass the HIPAA compliance verification: {len(failed)} of "
                          f"{len(results)} checks failed (the FAIL lines above)")


def cmd_infra_render(stage: Stage) -> None:
    """Writes the template as CloudFormation expands it for this stage (what build.sh infra check scans)."""
    path = stage.args.state_dir / stage.name / "platform.rendered.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stack.render(stage.config), indent=2, default=str) + "\n")
    print(path)


COMMANDS = {"check": cmd_check, "targets": cmd_targets, "trainable": cmd_trainable, "check-images": cmd_check_images,
            "push-plan": cmd_push_plan, "push-tag": cmd_push_tag, "record-push": cmd_record_push,
            "package": cmd_package, "upload": cmd_upload, "register": cmd_register, "deploy": cmd_deploy,
            "smoke": cmd_smoke, "destroy": cmd_destroy, "batch": cmd_batch, "monitor": cmd_monitor, "infra": stack.deploy,
            "infra-render": cmd_infra_render, "verify": cmd_verify}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sagemaker_deploy", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="stage config (containers/deploy/<stage>.json)")
    parser.add_argument("--state-dir", type=Path, default=Path("build/deploy"))
    parser.add_argument("--region", help="used when the config names no region")
    parser.add_argument("--registry", help="push to this registry host instead of the account's ECR")
    parser.add_argument("--version", help="the release's image tag (VERSION-GITSHA): summaries, dry-run placeholders")
    parser.add_argument("--tag", action="append", default=[], metavar="FAMILY=TAG",
                        help="record-push, push-tag: the tag pushed for each family")
    parser.add_argument("--image-id", help="push-tag: the local image's id (sha256:...)")
    parser.add_argument("--labels", help="push-tag: the local image's labels (JSON)")
    parser.add_argument("--local-tag", action="append", default=[], metavar="TARGET=TAG",
                        help="the tag build.sh gives a build target's local image (default: --version)")
    parser.add_argument("--lock", action="append", default=[], metavar="TARGET=LOCK",
                        help="the lock file a build target is built from (dry run: labels of an image not built)")
    parser.add_argument("--dry-run", action="store_true", help="print every AWS call instead of sending it")
    parser.add_argument("--call-log", type=Path, help="append each AWS call (operation and parameters, no bodies) "
                        "to this file, one JSON object a line (the access check reads it)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = commands.add_parser(name)
        if name == "batch":
            command.add_argument("--model", required=True, help="model name from the config, e.g. xgboost-risk")
            command.add_argument("--input", help="S3 prefix to score (default: batch.input_prefix)")
            command.add_argument("--output", help="S3 prefix for the results (default: batch.output_prefix)")
            command.add_argument("--wait", action="store_true", help="wait for the job and fail if it fails")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        COMMANDS[args.command](Stage(args))
    except DeployError as error:
        print(f"sagemaker_deploy: error: {error}", file=sys.stderr)
        return 1
    except ClientError as error:
        detail = error.response.get("Error", {})
        print(f"sagemaker_deploy: error: AWS refused {error.operation_name} ({detail.get('Code')}: "
              f"{detail.get('Message')}); check the config values it names and the permissions of the caller",
              file=sys.stderr)
        return 1
    except BotoCoreError as error:
        print(f"sagemaker_deploy: error: {error}; check AWS_REGION, the credentials and AWS_ENDPOINT_URL",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
