"""``retrain``: a Job from a CronJob as ``kubectl create job --from=cronjob`` makes it, once per key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from remediations import ActionStatus
from remediations.registry import ACTIONS
from remediations.retrain import INSTANTIATE, KEY_ANNOTATION, KEY_HASH, PUBLISHED, job_name
from tests.integration.test_remediation_support import IMAGE, Cluster, cronjob_body, open_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kube_env) -> Iterator[Cluster]:
    with open_cluster(kube_env) as opened:
        opened.batch.create_namespaced_cron_job(opened.ns, cronjob_body("train-churn"))
        yield opened


class Publisher:
    """A RetrainPublisher that records, and fails the first ``failures`` publishes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def publish(self, topic: str, key: str, message: Mapping[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((topic, key, dict(message)))


def jobs(cluster: Cluster) -> list[Any]:
    return list(cluster.batch.list_namespaced_job(cluster.ns).items)


def test_a_job_from_the_cronjob_with_owner_reference_and_annotations_then_a_noop(cluster):
    request = cluster.request("retrain", "CronJob", "train-churn", {"model": "churn"}, incident="inc-7")
    cron = cluster.read("CronJob", "train-churn")

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    name = job_name("train-churn", request.key_digest)
    assert result.details["job"] == name
    job = cluster.read("Job", name)
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "train-churn",
        "uid": cron["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    notes, labels = job["metadata"]["annotations"], job["metadata"]["labels"]
    assert notes[INSTANTIATE] == "manual"
    assert notes[KEY_ANNOTATION] == request.key
    assert notes["aiops.dev/incident"] == "inc-7"
    assert notes["owner"] == "ml-platform", "the jobTemplate's own annotations are kept"
    assert labels["team"] == "ml"
    assert labels[KEY_HASH] == request.key_digest
    assert (labels["aiops.dev/incident"], labels["aiops.dev/model"]) == ("inc-7", "churn")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["--model", "churn"]
    assert len(cluster.events("CronJob", "train-churn", "AiopsRetrainStarted")) == 1

    again = cluster.run(request)
    assert again.status is ActionStatus.NOOP
    assert [j.metadata.name for j in jobs(cluster)] == [name]


def test_a_retrain_request_is_published_once_even_when_the_first_publish_fails(cluster):
    publisher = Publisher(failures=1)
    request = cluster.request(
        "retrain", "CronJob", "train-churn", {"topic": "aiops.retrain", "model": "churn"}
    )

    failed = cluster.run(request, publisher=publisher)

    assert failed.status is ActionStatus.FAILED
    assert failed.retryable
    assert "publishing to aiops.retrain failed: broker unreachable" in failed.message
    assert len(jobs(cluster)) == 1, "the Job stays"

    published = cluster.run(request, publisher=publisher)
    assert published.status is ActionStatus.EXECUTED, published.message
    assert published.details["created"] is False
    ((topic, key, message),) = publisher.sent
    assert (topic, key, message["model"], message["job"]["name"]) == (
        "aiops.retrain",
        request.key,
        "churn",
        job_name("train-churn", request.key_digest),
    )
    assert (
        cluster.read("Job", message["job"]["name"])["metadata"]["annotations"][PUBLISHED] == "aiops.retrain"
    )

    assert cluster.run(request, publisher=publisher).status is ActionStatus.NOOP
    assert len(publisher.sent) == 1
    assert len(jobs(cluster)) == 1


def test_a_topic_without_a_publisher_is_refused_before_creating_anything(cluster):
    result = cluster.run(cluster.request("retrain", "CronJob", "train-churn", {"topic": "aiops.retrain"}))
    assert result.status is ActionStatus.FAILED
    assert "no retrain publisher" in result.message
    assert jobs(cluster) == []


def test_a_job_template_from_the_params_for_a_deployment_target(cluster):
    cluster.deployment("scorer", replicas=1)
    template = {
        "metadata": {"labels": {"kind": "retrain"}},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": IMAGE}]}},
        },
    }
    request = cluster.request("retrain", "Deployment", "scorer", {"jobTemplate": template})

    result = cluster.run(request)

    assert result.status is ActionStatus.EXECUTED, result.message
    job = cluster.read("Job", job_name("scorer", request.key_digest))
    assert job["metadata"]["labels"]["kind"] == "retrain"
    assert "ownerReferences" not in job["metadata"]
    assert INSTANTIATE not in job["metadata"]["annotations"]


def test_a_job_template_for_another_namespace_is_refused(cluster):
    template = {"metadata": {"namespace": "kube-system"}, "spec": {"template": {"spec": {"containers": []}}}}
    result = cluster.run(cluster.request("retrain", "CronJob", "train-churn", {"jobTemplate": template}))
    assert result.status is ActionStatus.FAILED
    assert "jobTemplate is for namespace 'kube-system'" in result.message
    assert jobs(cluster) == []


def test_a_missing_cronjob_fails_naming_it(cluster):
    result = cluster.run(cluster.request("retrain", "CronJob", "train-nothing"))
    assert result.status is ActionStatus.FAILED
    assert result.error == "NotFoundError"
    assert f"get CronJob {cluster.ns}/train-nothing: not found" in result.message


def test_the_plan_shows_the_job_and_creates_nothing(cluster):
    request = cluster.request("retrain", "CronJob", "train-churn", dry_run=True)
    plan = ACTIONS["retrain"].plan(cluster.ctx(request))
    name = job_name("train-churn", request.key_digest)
    assert plan.summary == f"create Job {cluster.ns}/{name} from CronJob {cluster.ns}/train-churn"
    assert f"+metadata.annotations.{INSTANTIATE}: manual" in plan.diff.splitlines()
    assert cluster.run(request).status is ActionStatus.DRY_RUN
    assert jobs(cluster) == []
