"""Static checks of the deploy/ recipes: every file parses, the Compose file is valid against
the Compose specification (check-jsonschema's vendored schema), the pieces refer to each
other correctly (Dockerfile sources, the nginx file's upstream lines that docker-compose
rewrites, the start script the Kubernetes manifests run), and the settings that matter for
uploads are there. Nothing here needs Docker or a Kubernetes cluster; what runs for real is
in test_s3_recipes.py, test_asgi_recipe.py, test_redis_recipe.py and tests/cluster/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_json_recipes_parse():
    lifecycle = json.loads((DEPLOY / "s3" / "lifecycle.json").read_text())
    rule = next(r for r in lifecycle["Rules"] if "AbortIncompleteMultipartUpload" in r)
    assert rule["Status"] == "Enabled" and rule["Filter"]["Prefix"] == "resumable/"
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 2  # > LEDGER_TTL
    policy = json.loads((DEPLOY / "s3" / "iam-policy.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload", "s3:ListBucket",
                       "s3:ListBucketMultipartUploads", "s3:ListMultipartUploadParts"}
    assert all(st["Effect"] == "Allow" and "*" not in st["Resource"].split(":::")[0]
               for st in policy["Statement"])


def test_compose_file_is_valid_compose_spec():
    compose = DEPLOY / "docker-compose.yml"
    exe = Path(sys.executable).parent / "check-jsonschema"
    out = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(compose)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(compose.read_text())
    services = doc["services"]
    assert {"redis", "s3", "app1", "app2", "app3", "nginx", "init", "sweeper"} <= set(services)
    for name in ("app1", "app2", "app3"):
        env = services[name]["environment"]
        # The channel layer's Redis is given apart from the ledger's (Cluster needs it).
        assert env["DJR_REDIS_URL"] and env["DJR_CHANNEL_REDIS_URL"]
        assert services[name]["depends_on"]["init"]["condition"] == \
            "service_completed_successfully"
    assert "./redis/redis.conf:/usr/local/etc/redis/redis.conf:ro" in services["redis"]["volumes"]
    assert "./nginx/djust_resumable.conf:/etc/djust_resumable/djust_resumable.conf:ro" in \
        services["nginx"]["volumes"]


def test_compose_rewrites_every_upstream_of_the_nginx_recipe():
    """docker-compose points deploy/nginx/djust_resumable.conf's upstream at app1..app3 by
    sed; if the nginx recipe's server lines change, this fails instead of compose silently
    balancing to nowhere."""
    conf = (DEPLOY / "nginx" / "djust_resumable.conf").read_text()
    servers = re.findall(r"(?m)^\s*server\s+([^\s;{]+)[\s;]", conf)
    command = " ".join(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
                       ["services"]["nginx"]["command"])
    rewritten = re.findall(r"s/([0-9\\.]+:\d+)/(app\d:8000)/", command)
    assert sorted(a.replace("\\", "") for a, _ in rewritten) == sorted(servers)
    assert sorted(b for _, b in rewritten) == ["app1:8000", "app2:8000", "app3:8000"]


def test_dockerfile_sources_exist_and_start_the_recipe_script():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    for src in re.findall(r"(?m)^COPY\s+(.+)\s+\S+$", text):
        for item in src.split():
            assert (ROOT / item).exists(), item
    assert "COPY deploy/asgi/uvicorn.sh /usr/local/bin/djr-uvicorn" in text
    assert 'CMD ["djr-uvicorn"]' in text
    assert "libmagic1" in text


def test_uvicorn_script_flags():
    text = (DEPLOY / "asgi" / "uvicorn.sh").read_text()
    for flag in ("--ws websockets-sansio", "--ws-per-message-deflate false",
                 "--ws-max-size 33554432", "--timeout-graceful-shutdown"):
        assert flag in text, flag


def test_kubernetes_manifests():
    k8s = DEPLOY / "k8s"
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    docs = [d for f in kust["resources"] for d in _yaml_docs(k8s / f)]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
    dep = by_kind[("Deployment", "djust-resumable")]["spec"]["template"]["spec"]
    assert dep["containers"][0]["command"] == ["djr-uvicorn"]
    assert dep["terminationGracePeriodSeconds"] > 30  # uvicorn's graceful shutdown fits
    ing = by_kind[("Ingress", "djust-resumable")]["metadata"]["annotations"]
    assert ing["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert ing["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(ing["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    svc = by_kind[("Service", "djust-resumable")]["spec"]
    assert "sessionAffinity" not in svc
    cron = by_kind[("CronJob", "djust-resumable-sweep")]["spec"]
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "resumable_sweep"
    redis_conf = by_kind[("ConfigMap", "djr-redis-conf")]["data"]["redis.conf"]
    assert "appendfsync everysec" in redis_conf and "maxmemory-policy noeviction" in redis_conf
