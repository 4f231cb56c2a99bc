"""Pod specs and pod templates: the defaults and validation shared by Pods and every workload."""

from __future__ import annotations

from simulations.twin.errors import FieldError, duplicate, invalid, not_supported, required
from simulations.twin.objects import Obj
from simulations.twin.validation import dns1123_label, validate_template_meta

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
PORT_MAX = 65535


def _image_is_latest(image: str) -> bool:
    if "@" in image:
        return False
    last = image.rsplit("/", 1)[-1]
    return ":" not in last or last.endswith(":latest")


def default_container(container: Obj) -> None:
    """Container defaults: pull policy from the tag, termination message, port protocol."""
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = container.get("image")
    if isinstance(image, str) and image:
        container.setdefault("imagePullPolicy", "Always" if _image_is_latest(image) else "IfNotPresent")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def default_pod_spec(spec: Obj) -> None:
    """``SetDefaults_PodSpec`` and the container defaults."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                default_container(container)


def default_pod_template(template: object) -> None:
    """Defaults inside a pod template, if the template is there."""
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


def _validate_containers(containers: object, path: str, *, needed: bool) -> tuple[list[FieldError], set[str]]:
    errors: list[FieldError] = []
    names: set[str] = set()
    if containers is None or containers == []:
        if needed:
            errors.append(required(path))
        return errors, names
    if not isinstance(containers, list):
        return [invalid(path, containers, "must be a list")], names
    for i, container in enumerate(containers):
        where = f"{path}[{i}]"
        if not isinstance(container, dict):
            errors.append(invalid(where, container, "must be an object"))
            continue
        name = container.get("name")
        if not name:
            errors.append(required(f"{where}.name"))
        elif not isinstance(name, str):
            errors.append(invalid(f"{where}.name", name, "must be a string"))
        else:
            errors += [invalid(f"{where}.name", name, p) for p in dns1123_label(name)]
            if name in names:
                errors.append(duplicate(f"{where}.name", name))
            names.add(name)
        image = container.get("image")
        if not image or not isinstance(image, str) or image.strip() != image:
            errors.append(required(f"{where}.image"))
        for j, env in enumerate(container.get("env") or []):
            if not isinstance(env, dict) or not env.get("name"):
                errors.append(required(f"{where}.env[{j}].name"))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort") if isinstance(port, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= PORT_MAX:
                errors.append(
                    invalid(
                        f"{where}.ports[{j}].containerPort", number, "must be between 1 and 65535, inclusive"
                    )
                )
    return errors, names


def validate_pod_spec(
    spec: object, path: str, restart_policies: list[str] = RESTART_POLICIES
) -> list[FieldError]:
    """Containers (names, images, ports), restart policy."""
    if not isinstance(spec, dict):
        return [required(path)] if spec is None else [invalid(path, spec, "must be an object")]
    errors, names = _validate_containers(spec.get("containers"), f"{path}.containers", needed=True)
    init_errors, init_names = _validate_containers(
        spec.get("initContainers"), f"{path}.initContainers", needed=False
    )
    errors += init_errors
    for name in sorted(names & init_names):
        errors.append(duplicate(f"{path}.initContainers", name))
    policy = spec.get("restartPolicy")
    if policy not in restart_policies:
        errors.append(not_supported(f"{path}.restartPolicy", policy, restart_policies))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace < 0):
        errors.append(
            invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0")
        )
    return errors


def validate_pod_template(
    template: object, path: str, restart_policies: list[str] = RESTART_POLICIES
) -> list[FieldError]:
    """A pod template: its metadata and its spec."""
    if template is None:
        return [required(path)]
    if not isinstance(template, dict):
        return [invalid(path, template, "must be an object")]
    return validate_template_meta(template.get("metadata"), f"{path}.metadata") + validate_pod_spec(
        template.get("spec"), f"{path}.spec", restart_policies
    )


def template_labels(template: object) -> dict[str, str]:
    """The labels of a pod template (never None)."""
    if not isinstance(template, dict):
        return {}
    meta = template.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return dict(labels) if isinstance(labels, dict) else {}
