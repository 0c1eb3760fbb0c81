"""checkov loads the rules of this directory as a package (--external-checks-dir)."""
