"""The access check: every AWS request of the deploy, evaluated against the platform stack's own policies by
principalmapper's local policy simulation (see README "Access check")."""
