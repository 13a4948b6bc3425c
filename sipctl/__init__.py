"""sipctl: the operator's command-line tool for sipd."""
