"""A local S3 API for the sandbox: `moto_server` on a free loopback port, with credentials that matter.

`modelwarden demo` serves its models from here (s3:// URIs and a storage Secret, as on a real
cluster), and the tests run the kubelets' fetches against it. moto checks signatures and IAM
policies only once told to, so start() makes an admin key while checks are still off, then turns
them on: from then on every request needs a key moto issued, and `reader()` hands out keys that
may only read one bucket. A wrong key is refused like AWS refuses it (InvalidAccessKeyId,
SignatureDoesNotMatch), which is what the fetch-failure paths need to be real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready

REGION = "us-east-1"
ADMIN_USER = "modelwarden-sandbox-admin"


class ObjectStore:
    """Start with :meth:`start`, stop with :meth:`stop`; `env(key)` is a storage Secret's content."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mw-s3-"))
        self.port = port or free_port()
        self.log_path = self.workdir / "moto_server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The venv's `moto_server` script, or the same program through this interpreter (a venv's
        bin directory need not be on PATH)."""
        script = Path(sys.executable).parent / "moto_server"
        launcher = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
        return [*launcher, "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self, timeout: float = 60.0) -> "ObjectStore":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_ready(self.process, f"{self.url}/moto-api/data.json", "moto_server", self.log_tail, timeout)
            iam = self._client("iam", {})
            iam.create_user(UserName=ADMIN_USER)
            iam.put_user_policy(UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            self.admin = self._issued(iam.create_access_key(UserName=ADMIN_USER)["AccessKey"])
            # Checks on: every request from now on needs a key issued above or by reader().
            requests.post(f"{self.url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def _issued(key: dict[str, Any]) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def _client(self, service: str, key: dict[str, str]) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key.get("AWS_ACCESS_KEY_ID", "unused"),
                            aws_secret_access_key=key.get("AWS_SECRET_ACCESS_KEY", "unused"))

    def client(self, service: str = "s3") -> Any:
        """A boto3 client with the admin key."""
        return self._client(service, self.admin)

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def upload(self, bucket: str, key: str, path: Path) -> str:
        """Put a local file at s3://bucket/key; returns that URI."""
        self.client().upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def reader(self, bucket: str, user: str | None = None) -> dict[str, str]:
        """A new IAM user's key that may list `bucket` and get its objects, and nothing else."""
        iam = self.client("iam")
        user = user or f"reader-{bucket}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="read-models", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                           "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}],
        }))
        return self._issued(iam.create_access_key(UserName=user)["AccessKey"])

    def env(self, key: dict[str, str]) -> dict[str, str]:
        """A storage Secret's keys for `key` (the standard AWS environment fetch-model reads)."""
        return {**key, "AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": REGION}

    def __enter__(self) -> "ObjectStore":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
