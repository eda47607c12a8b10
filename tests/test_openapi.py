"""/openapi.json: a valid OpenAPI 3 document that documents every route and the real responses."""

from __future__ import annotations

import copy

import jsonschema
import pytest
from openapi_spec_validator import validate

from tests.support.helpers import make_radiograph, response_schema_name, validate_against_spec


def test_openapi_document_is_valid_openapi_3(openapi_spec):
    validate(openapi_spec)
    assert openapi_spec["openapi"].startswith("3.")


def test_every_route_is_documented(app, openapi_spec):
    routes = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, operations in openapi_spec["paths"].items() for method in operations}
    assert routes == documented


def test_predict_documents_every_request_form_and_error_status(openapi_spec):
    operation = openapi_spec["paths"]["/predict"]["post"]
    assert set(operation["requestBody"]["content"]) == {"multipart/form-data", "application/json", "image/png",
                                                        "image/jpeg", "application/dicom"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "application/dicom",
                                                            'multipart/related; type="application/dicom"',
                                                            "application/fhir+json"}
    for status in ("400", "406", "413", "415", "422", "503"):
        assert response_schema_name(openapi_spec, "/predict", "post", int(status)) == "Error"
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    form = openapi_spec["components"]["schemas"]["PredictForm"]
    assert form["properties"]["image"]["items"] == {"type": "string", "format": "binary"}
    assert form["properties"]["body_part"]["enum"][-1] == "XR_WRIST"


@pytest.mark.parametrize(("path", "status"), [("/healthz", 200), ("/readyz", 200), ("/models", 200),
                                              ("/missing", 404)])
def test_real_get_responses_match_their_documented_schema(client, openapi_spec, path, status):
    response = client.get(path)
    assert response.status_code == status
    documented_path = path if path in openapi_spec["paths"] else "/healthz"
    validate_against_spec(openapi_spec, response_schema_name(openapi_spec, documented_path, "get", status),
                          response.get_json())


def test_spec_validation_rejects_a_response_that_breaks_the_schema(client, openapi_spec):
    body = client.post("/predict", data=make_radiograph(seed=8), content_type="image/png").get_json()
    validate_against_spec(openapi_spec, "PredictResponse", body)
    for mutate in (lambda broken: broken["study"].update(abnormality=1.5),
                   lambda broken: broken["study"].update(label="maybe"),
                   lambda broken: broken["images"][0].pop("name"),
                   lambda broken: broken.update(extra=1)):
        broken = copy.deepcopy(body)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_against_spec(openapi_spec, "PredictResponse", broken)
