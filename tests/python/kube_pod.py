"""Turns the Kubernetes example, as `kustomize build` renders it, into the
Pod form `podman kube play` runs here: the Deployment's pod template as a
Pod, with what a single machine without a cluster cannot provide swapped
for local equivalents, each named:

- a ConfigMap volume becomes a host directory holding its data (and
  envFrom of a ConfigMap becomes plain env);
- a Secret volume and the projected service-account token become host
  directories the test fills (--secret NAME=DIR, --token-dir DIR);
- native sidecars (init containers with restartPolicy: Always), which
  podman does not run beside the app, become ordinary containers listed
  first;
- emptyDir volumes take the pod's name as a prefix (podman keeps them as
  named volumes, which two pods on one machine would otherwise share);
- kubelet's HTTP probes go (podman would run them as a command inside the
  container, and the image has no shell or curl; the test asks the same
  telemetry endpoints itself), and so do container ports on the host's
  network, which podman refuses there.

usage: kube_pod.py RENDERED.yaml --name POD --workdir DIR --token-dir DIR [--secret NAME=DIR]... > pod.yaml
"""

import argparse
import os
import sys

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered")
    parser.add_argument("--name", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--token-dir", required=True)
    parser.add_argument("--secret", action="append", default=[])
    args = parser.parse_args()
    secrets = dict(s.split("=", 1) for s in args.secret)
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        sys.exit(f"kube_pod.py: expected one Deployment, found {len(deployments)}")
    template = deployments[0]["spec"]["template"]
    spec = template["spec"]

    def configmap(name: str) -> dict:
        # kustomize appends a hash to generated names; references follow it.
        if name not in configmaps:
            sys.exit(f"kube_pod.py: no ConfigMap {name}")
        return configmaps[name]

    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            data = configmap(volume.pop("configMap")["name"]).get("data", {})
            path = os.path.join(args.workdir, "configmap-" + volume["name"])
            os.makedirs(path, exist_ok=True)
            for key, value in data.items():
                with open(os.path.join(path, key), "w") as out:
                    out.write(value)
                os.chmod(os.path.join(path, key), 0o644)
            volume["hostPath"] = {"path": path, "type": "Directory"}
        elif "secret" in volume:
            name = volume.pop("secret")["secretName"]
            if name not in secrets:
                sys.exit(f"kube_pod.py: --secret {name}=DIR is needed")
            volume["hostPath"] = {"path": secrets[name], "type": "Directory"}
        elif "projected" in volume:
            volume.pop("projected")
            volume["hostPath"] = {"path": args.token_dir, "type": "Directory"}

    renamed = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{args.name}-{volume['name']}"
    for container in spec.get("initContainers", []) + spec["containers"]:
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])

    natives = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    spec["initContainers"] = [c for c in spec.get("initContainers", []) if c not in natives]
    if not spec["initContainers"]:
        del spec["initContainers"]
    for container in natives:
        container.pop("restartPolicy")
    spec["containers"] = natives + spec["containers"]
    for container in spec["containers"]:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            container.pop(probe, None)
        if spec.get("hostNetwork"):
            container.pop("ports", None)
        env = container.setdefault("env", [])
        for source in container.pop("envFrom", []):
            data = configmap(source["configMapRef"]["name"]).get("data", {})
            env.extend({"name": k, "value": v} for k, v in sorted(data.items()))
        if not env:
            container.pop("env")

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": args.name, "labels": template["metadata"].get("labels", {})},
        "spec": spec,
    }
    yaml.safe_dump(pod, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
