"""What an operator does about each reason a quality read fails (log lines, the CLI). No imports: the CLI's
``check`` path stays free of AWS and HTTP libraries."""

# One clear line per failure reason; the operator's first step (docs/quality.md "Runbook").
WHAT_TO_DO = {
    "permission_missing": "the token may send events but not read dataset quality: give its (system) user "
    "'Use events dataset' on the pixel and the app ads_read + ads_management or business_management "
    "(docs/quality.md, Permission)",
    "unknown_dataset": "Meta knows no dataset with this id (or the token cannot see it): check QUALITY_PIXEL_IDS",
    "token_invalid": "Meta refused the access token even after a fresh secret read: rotate the secret",
    "throttled": "Meta throttled the read; the next scheduled read tries again",
    "version_retired": "the Graph API version is retired: raise GraphApiVersion",
    "deadline": "the invocation ran out of time before this pixel: fewer pixels or a longer timeout",
}
