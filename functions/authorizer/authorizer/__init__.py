"""API Gateway REQUEST authorizer: API key → principal, scopes and an IAM policy."""
