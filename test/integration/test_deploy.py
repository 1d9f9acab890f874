#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Check the deployment examples with the tools that read them.

Usage: test_deploy.py DEPLOY-DIR {systemd|haproxy|nginx|fail2ban}

DEPLOY-DIR is examples/deploy. Each check runs the real tool on the
shipped file and must pass without a warning, and then runs it on a copy
with one deliberate mistake, which the tool must reject, so a checker
that accepts anything fails the test. Exits 0 on success, 1 on failure,
77 (skipped) when the tool is not installed.
"""

import os
import shutil
import subprocess
import sys
import tempfile


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def need(tool):
    path = shutil.which(tool)
    if path is None:
        print(f"skipped: {tool} is not installed (scripts/deps.sh)")
        sys.exit(77)
    return path


def run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    return p.returncode, p.stdout + p.stderr


def copy_with(src, dst, old, new):
    with open(src) as f:
        text = f.read()
    check(old in text, f"{src}: '{old}' not found to replace")
    with open(dst, "w") as f:
        f.write(text.replace(old, new))


def check_systemd(deploy, tmp):
    tool = need("systemd-analyze")
    units = sorted(os.listdir(os.path.join(deploy, "systemd")))
    check("ringprot-imapd.service" in units, f"no service unit: {units}")
    check(len([u for u in units if u.endswith(".socket")]) == 3,
          f"want three socket units: {units}")
    for u in units:
        shutil.copy(os.path.join(deploy, "systemd", u), tmp)
    # verify insists ExecStart's program exists: name one that does.
    svc = os.path.join(tmp, "ringprot-imapd.service")
    copy_with(svc, svc, "ExecStart=/usr/sbin/ringprot-imapd",
              "ExecStart=/bin/true")

    def verify():
        return run([tool, "verify", "--man=no"] +
                   [os.path.join(tmp, u) for u in units], cwd=tmp)

    rc, out = verify()
    check(rc == 0 and out.strip() == "",
          f"systemd-analyze verify: rc {rc}:\n{out}")
    # Each socket names its fd, and the service takes all three.
    for u, name in (("ringprot-imapd.socket", "imap"),
                    ("ringprot-imapd-imaps.socket", "imaps"),
                    ("ringprot-imapd-lmtp.socket", "lmtp")):
        with open(os.path.join(tmp, u)) as f:
            check(f"FileDescriptorName={name}\n" in f.read(),
                  f"{u}: no FileDescriptorName={name}")
    with open(svc) as f:
        text = f.read()
    for key in ("Type=notify\n", "WatchdogSec=", "NoNewPrivileges=yes\n",
                "ProtectSystem=strict\n", "PrivateTmp=yes\n"):
        check(key in text, f"service lacks {key.strip()}")
    # systemd 252 warns (rc 0) for a bad value: the output is the signal.
    copy_with(svc, svc, "Type=notify", "Type=notifyy")
    rc, out = verify()
    check("notifyy" in out, f"a bad Type= went unnoticed: rc {rc}: {out}")


def check_haproxy(deploy, tmp):
    tool = need("haproxy")
    cfg = os.path.join(deploy, "haproxy", "haproxy.cfg")
    rc, out = run([tool, "-c", "-f", cfg])
    check(rc == 0 and "[WARNING]" not in out and "[ALERT]" not in out,
          f"haproxy -c: rc {rc}:\n{out}")
    with open(cfg) as f:
        text = f.read()
    for port in (":143", ":993", ":24"):
        check(f"bind {port}\n" in text, f"no frontend on {port}")
    servers = [l for l in text.splitlines() if l.strip().startswith("server ")]
    check(len(servers) >= 6, "want several hosts per backend")
    check(text.count("default-server send-proxy-v2 check check-send-proxy")
          == 3, "every backend must send PROXY v2, checks included")
    bad = os.path.join(tmp, "bad.cfg")
    copy_with(cfg, bad, "send-proxy-v2 check", "send-proxy-v3 check")
    rc, out = run([tool, "-c", "-f", bad])
    check(rc != 0, f"haproxy accepted send-proxy-v3:\n{out}")


def nginx_test(tool, tmp, conf):
    return run([tool, "-t", "-p", tmp + "/", "-c", conf, "-e", "stderr",
                "-g", f"pid {tmp}/nginx.pid;"])


def check_nginx(deploy, tmp):
    tool = need("nginx")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_mail_module.so"):
        print("skipped: no nginx mail module (libnginx-mod-mail)")
        sys.exit(77)
    openssl = need("openssl")
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    rc, out = run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                   "-keyout", key, "-out", cert, "-days", "2",
                   "-subj", "/CN=mail.example.org"])
    check(rc == 0, f"openssl req: {out}")
    conf = os.path.join(tmp, "nginx.conf")
    copy_with(os.path.join(deploy, "nginx", "nginx-mail.conf"), conf,
              "/etc/ringprot/tls/", tmp + "/")
    rc, out = nginx_test(tool, tmp, conf)
    check(rc == 0 and "[warn]" not in out and "[emerg]" not in out,
          f"nginx -t: rc {rc}:\n{out}")
    with open(conf) as f:
        check("\tproxy_protocol on;\n" in f.read(), "no proxy_protocol on;")
    bad = os.path.join(tmp, "bad.conf")
    copy_with(conf, bad, "proxy_protocol on;", "proxy_protocol maybe;")
    rc, out = nginx_test(tool, tmp, bad)
    check(rc != 0, f"nginx accepted 'proxy_protocol maybe':\n{out}")


def check_fail2ban(deploy, tmp):
    """The jail and filter load in a full fail2ban configuration.

    (What the filter matches is tested on the logger's real output in
    test/test-srv-log.c.)
    """
    tool = need("fail2ban-client")
    if not os.path.isdir("/etc/fail2ban/filter.d"):
        print("skipped: no /etc/fail2ban (fail2ban package)")
        sys.exit(77)
    conf = os.path.join(tmp, "fail2ban")
    shutil.copytree("/etc/fail2ban", conf)
    # Only our jail: the distribution's jails read logs not here.
    for name in os.listdir(os.path.join(conf, "jail.d")):
        os.unlink(os.path.join(conf, "jail.d", name))
    for d in ("filter.d", "jail.d"):
        shutil.copy(os.path.join(deploy, "fail2ban", d, "ringprot.conf"),
                    os.path.join(conf, d, "ringprot.conf"))
    rc, out = run([tool, "-c", conf, "-t"])
    check(rc == 0, f"fail2ban-client -t: rc {rc}:\n{out}")
    rc, out = run([tool, "-c", conf, "-d"])
    check(rc == 0 and "['add', 'ringprot-imapd', 'systemd']" in out,
          f"the ringprot-imapd jail is not loaded:\n{out}")
    filt = os.path.join(conf, "filter.d", "ringprot.conf")
    # (-t does not compile regexes; it does resolve the filter's names.)
    copy_with(filt, filt, "%(__prefix_line)s", "%(__no_such_line)s")
    rc, out = run([tool, "-c", conf, "-t"])
    check(rc != 0, f"fail2ban accepted an undefined name:\n{out}")


CHECKS = {
    "systemd": check_systemd,
    "haproxy": check_haproxy,
    "nginx": check_nginx,
    "fail2ban": check_fail2ban,
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CHECKS:
        print(__doc__, file=sys.stderr)
        return 2
    deploy = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="t-deploy-") as tmp:
        try:
            CHECKS[sys.argv[2]](deploy, tmp)
        except Failure as e:
            print(f"FAIL: {e}")
            return 1
    print(f"ok: {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
