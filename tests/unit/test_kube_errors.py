"""kube.api.describe_error: a log line that names the API server's reason, not its headers."""

from kubernetes.client.exceptions import ApiException

from modelwarden.kube.api import describe_error


def test_an_api_error_is_described_by_its_status_and_the_servers_message():
    error = ApiException(status=500, reason="Internal Server Error")
    error.body = '{"kind":"Status","message":"Internal error occurred: failed to allocate a serviceIP: range is full"}'
    assert describe_error(error) == "ApiException 500: Internal error occurred: failed to allocate a serviceIP: range is full"
    error.body = "not json"
    assert describe_error(error) == "ApiException 500: not json"
    assert describe_error(TimeoutError("read timed out")) == "TimeoutError: read timed out"
