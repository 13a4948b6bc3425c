"""The report's spam rule as a sipd routing hook (docs/routing-hook.md).

OpenSIPS script in the report:

    if (is_method("INVITE") && $rU =~ "^[0-9]+$" && $rd == "<server IP>") {
        xlog("L_NOTICE", "Dropped Spam-Call to $tu from $si\\n");
        drop();
    }

Calls from scanners go to digits@<server IP>; real callers dial name@domain. Enable with

    [routing]
    hook = "/etc/sipd/hooks/spam_rule.py"
"""


def route(request):
    if request.method == "INVITE" and request.ruri_user.isdigit() and request.is_own_address(request.ruri_host):
        request.log(f"Dropped Spam-Call to {request.to_uri} from {request.source_ip}", "warning")
        request.drop()
