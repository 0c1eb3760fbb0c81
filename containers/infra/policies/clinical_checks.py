"""The platform's own checkov rules, for properties that moto's CloudFormation drops and real AWS alone proves
(loaded by `./build.sh infra check` with --external-checks-dir)."""

from checkov.cloudformation.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class S3KmsBucketKey(BaseResourceCheck):
    """SSE-KMS buckets use a bucket key: one KMS call per bucket-key period instead of one per object."""

    def __init__(self) -> None:
        super().__init__(name="S3 buckets encrypted with KMS use an S3 bucket key", id="CKV_CLINICAL_1",
                         categories=[CheckCategories.ENCRYPTION], supported_resources=["AWS::S3::Bucket"])

    def scan_resource_conf(self, conf) -> CheckResult:
        rules = conf.get("Properties", {}).get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        kms = [rule for rule in rules
               if rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse")]
        return CheckResult.PASSED if all(rule.get("BucketKeyEnabled") is True for rule in kms) else CheckResult.FAILED


class PredictionsExpire(BaseResourceCheck):
    """Prediction records expire (XGBOOST_PREDICTION_TTL_DAYS): the table has a TTL attribute enabled."""

    def __init__(self) -> None:
        super().__init__(name="DynamoDB prediction tables have a TTL attribute enabled", id="CKV_CLINICAL_2",
                         categories=[CheckCategories.GENERAL_SECURITY], supported_resources=["AWS::DynamoDB::Table"])

    def scan_resource_conf(self, conf) -> CheckResult:
        properties = conf.get("Properties", {})
        name = properties.get("TableName", "")
        if not (isinstance(name, dict) and "predictions" in str(name) or str(name).endswith("predictions")):
            return CheckResult.UNKNOWN
        ttl = properties.get("TimeToLiveSpecification", {})
        return CheckResult.PASSED if ttl.get("Enabled") is True and ttl.get("AttributeName") else CheckResult.FAILED


class TablesProtected(BaseResourceCheck):
    """Tables of patient records can be deleted only after deletion protection is switched off."""

    def __init__(self) -> None:
        super().__init__(name="DynamoDB tables have deletion protection", id="CKV_CLINICAL_3",
                         categories=[CheckCategories.BACKUP_AND_RECOVERY], supported_resources=["AWS::DynamoDB::Table"])

    def scan_resource_conf(self, conf) -> CheckResult:
        protected = conf.get("Properties", {}).get("DeletionProtectionEnabled") is True
        return CheckResult.PASSED if protected else CheckResult.FAILED


s3_kms_bucket_key = S3KmsBucketKey()
predictions_expire = PredictionsExpire()
tables_protected = TablesProtected()
