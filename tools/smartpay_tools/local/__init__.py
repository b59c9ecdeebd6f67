"""The Docker-free SAM runner: template.yaml read as SAM reads it, a local API Gateway, each function
in its own process with SAM's environment rules, the Lambda endpoint, schedules, and the services
(PostgreSQL, moto, the Buffr simulator) the stack needs. ``sam local`` needs Docker; this does not.
"""
