"""The application side of the guides' services: invoke the endpoints and keep the platform's records.

Depends on boto3 only (no serving runtime, torch or xgboost). Each factory reads the guide's variables from the
environment (`platform.env`, written by `./build.sh infra`) and fails with one line naming any that are missing or
malformed.
"""

from clinical_services.errors import (BadInput, ConfigurationError, EndpointError, MissingResource, ServiceError,
                                      UnknownModelType)
from clinical_services.pat_service import PatAnalysis, PatService, create_pat_service_from_env
from clinical_services.xgboost_service import (ModelInfo, XgboostPrediction, XgboostService,
                                               create_xgboost_service_from_env)

__all__ = ["BadInput", "ConfigurationError", "EndpointError", "MissingResource", "ModelInfo", "PatAnalysis",
           "PatService", "ServiceError", "UnknownModelType", "XgboostPrediction", "XgboostService",
           "create_pat_service_from_env", "create_xgboost_service_from_env"]
