"""`kubectl get mdep,dpol` against the emulator: Tables with the CRDs' printer columns, evaluated
like the API server does (compare tests/component/test_modeldeployment_controller.py, where the
real one answers)."""

from tests.kubeclient import collection_path

TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
MD = {"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fraud"},
      "spec": {"model": "fraud", "stable": {"version": "7", "modelUri": "file:///m/7"}}}


def test_lists_and_objects_as_tables_with_printer_columns(kube):
    kube.create("modeldeployments", MD)
    kube.patch("modeldeployments", "fraud", {"status": {
        "phase": "Progressing", "stable": {"version": "7"}, "canary": {"version": "8"}, "weights": {"canary": 20},
        "step": "1/3", "verdict": "Pass",
        "conditions": [{"type": "Stalled", "status": "False"}, {"type": "Ready", "status": "True"}]}}, subresource="status")
    url = kube.url + collection_path("modeldeployments", "default")
    listing = kube.session.get(url, headers=TABLE, timeout=10).json()
    assert listing["kind"] == "Table"
    names = [c["name"] for c in listing["columnDefinitions"] if not c.get("priority")]
    assert names == ["Name", "Ready", "Phase", "Stable", "Canary", "Weight", "Step", "Verdict", "SpecBehind", "Age"]
    (row,) = listing["rows"]
    assert row["cells"][:8] == ["fraud", "True", "Progressing", "7", "8", 20, "1/3", "Pass"]
    assert row["cells"][-1].endswith("s") and row["object"]["metadata"]["name"] == "fraud"  # an age, like the API server
    one = kube.session.get(url + "/fraud", headers=TABLE, timeout=10).json()
    assert one["kind"] == "Table" and one["rows"][0]["cells"][:3] == ["fraud", "True", "Progressing"]
    plain = kube.session.get(url + "/fraud", timeout=10).json()
    assert plain["kind"] == "ModelDeployment"  # without asking for a Table, the object
