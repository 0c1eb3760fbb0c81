"""What both services check and keep the same way: a patient's id, and integrations (the guides' keys,
`integration_id` then `patient_id`)."""

from __future__ import annotations

import uuid
from typing import Mapping

from clinical_services import aws
from clinical_services.errors import BadInput


def patient(patient_id: str) -> str:
    if not isinstance(patient_id, str) or not patient_id.strip() or len(patient_id) > 1024:
        raise BadInput("patient_id must be a non-empty string of at most 1024 characters")
    return patient_id


def record_integration(dynamodb, table: str, variable: str, patient_id: str, system: str,
                       details: Mapping[str, str]) -> str:
    """An integration of a patient's records with another system; returns its new integration_id."""
    patient(patient_id)
    if not isinstance(system, str) or not system.strip():
        raise BadInput("system must be a non-empty string")
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in dict(details).items()):
        raise BadInput("integration details must map strings to strings")
    integration_id = str(uuid.uuid4())
    _, created_at = aws.now()
    aws.write_new(dynamodb, [(table, "integration_id", {
        "integration_id": integration_id, "patient_id": patient_id, "system": system, "details": dict(details),
        "created_at": created_at})], integration_id)
    return integration_id
