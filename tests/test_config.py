from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailraven.config import ConfigError, load


class ConfigTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_embeddedDefaults(self):
        config = load(environ={})
        self.assertEqual(config["smtp.listen"], ["tcp:2525"])
        self.assertEqual(config["submission.listen"], ["tcp:2587"])
        self.assertEqual(config["api.listen"], ["tcp:8080"])
        self.assertEqual(config["smtp.max_message_size"], 26214400)
        self.assertEqual(config.dataDir, os.path.abspath("mailraven-data"))

    def test_fileThenEnvironment(self):
        path = self.write(
            '[smtp]\nmax_recipients = 7\nlisten = ["tcp:25"]\n'
            '[server]\ndomains = ["Example.ORG."]\n'
        )
        config = load(
            path,
            environ={
                "MAILRAVEN_SMTP_MAX_RECIPIENTS": "9",
                "MAILRAVEN_API_LISTEN": "tcp:80, tcp6:port=80",
            },
        )
        self.assertEqual(config["smtp.max_recipients"], 9)
        self.assertEqual(config["smtp.listen"], ["tcp:25"])
        self.assertEqual(config["api.listen"], ["tcp:80", "tcp6:port=80"])
        self.assertEqual(config["server.domains"], ["example.org"])

    def test_unknownKeyNamed(self):
        path = self.write("[smtp]\nmax_mesage_size = 5\n")
        e = self.assertRaises(ConfigError, load, path, environ={})
        self.assertIn("smtp.max_mesage_size", str(e))
        e = self.assertRaises(
            ConfigError, load, None, environ={"MAILRAVEN_SMTP_FOO": "1"}
        )
        self.assertIn("MAILRAVEN_SMTP_FOO", str(e))
        e = self.assertRaises(
            ConfigError, load, self.write("[nosuch]\nx = 1\n"), environ={}
        )
        self.assertIn("nosuch.x", str(e))

    def test_unknownKeySuggestsTheNearestKey(self):
        """A misspelt key names the key the operator probably meant."""
        path = self.write("[smtp]\nmax_recipient = 5\n")
        e = self.assertRaises(ConfigError, load, path, environ={})
        self.assertIn("did you mean smtp.max_recipients?", str(e))
        e = self.assertRaises(
            ConfigError, load, None, environ={"MAILRAVEN_SEVER_HOSTNAME": "x"}
        )
        self.assertIn("did you mean server.hostname?", str(e))
        e = self.assertRaises(
            ConfigError, load, self.write("[zzz]\nq = 1\n"), environ={}
        )
        self.assertNotIn("did you mean", str(e))

    def test_quotaPastSQLitesIntegerIsRefused(self):
        """Found by the re-check: 2**63 was taken, and the warning service
        then failed every 10 s (OverflowError)."""
        e = self.assertRaises(
            ConfigError,
            load,
            None,
            environ={"MAILRAVEN_QUOTA_DEFAULT": str(2**63)},
        )
        self.assertIn("at most 9223372036854775807 bytes", str(e))
        config = load(environ={"MAILRAVEN_QUOTA_DEFAULT": str(2**63 - 1)})
        self.assertEqual(config["quota.default"], 2**63 - 1)

    def test_idnDomainsAreALabels(self):
        """Found by the re-check: köln.test in server.domains stopped the
        server (the self-signed certificate takes A-labels only)."""
        config = load(environ={"MAILRAVEN_SERVER_DOMAINS": "example.test,Köln.test."})
        self.assertEqual(config["server.domains"], ["example.test", "xn--kln-sna.test"])

    def test_badNumberFromTheEnvironmentSaysWhatIsExpected(self):
        """Text where a number belongs gets the expectation, not int()'s words."""
        e = self.assertRaises(
            ConfigError, load, None, environ={"MAILRAVEN_SMTP_MAX_RECIPIENTS": "many"}
        )
        self.assertIn("expected an integer, got 'many'", str(e))
        self.assertNotIn("invalid literal", str(e))
        e = self.assertRaises(
            ConfigError, load, None, environ={"MAILRAVEN_DNS_TIMEOUT": "fast"}
        )
        self.assertIn("expected a number, got 'fast'", str(e))

    def test_badValueNamed(self):
        e = self.assertRaises(
            ConfigError, load, self.write("[smtp]\nmax_recipients = 0\n"), environ={}
        )
        self.assertIn("smtp.max_recipients", str(e))
        e = self.assertRaises(
            ConfigError, load, None, environ={"MAILRAVEN_LOG_FORMAT": "xml"}
        )
        self.assertIn("log.format", str(e))
        e = self.assertRaises(
            ConfigError, load, self.write("[tls]\ncert_file = 'x'\n"), environ={}
        )
        self.assertIn("tls.key_file", str(e))
        for workers in ("-1", "65", "two"):
            e = self.assertRaises(
                ConfigError, load, None, environ={"MAILRAVEN_STORE_WORKERS": workers}
            )
            self.assertIn("store.workers", str(e))
        self.assertEqual(
            load(environ={"MAILRAVEN_STORE_WORKERS": "0"})["store.workers"], 0
        )
        e = self.assertRaises(ConfigError, load, self.write("[smtp\n"), environ={})
        self.assertIn("not valid TOML", str(e))

    def test_configFileVariableIsNotAKey(self):
        """MAILRAVEN_CONFIG names the file (cli.py, ops/): it is neither an
        unknown key nor a value of any key, while its neighbours are keys."""
        withVariable = load(environ={"MAILRAVEN_CONFIG": "/etc/mailraven.toml"})
        self.assertEqual(withVariable.asDict(), load(environ={}).asDict())
        self.assertNotIn("/etc/mailraven.toml", repr(withVariable.asDict()))
        e = self.assertRaises(
            ConfigError, load, None, environ={"MAILRAVEN_CONFIG_FILE": "/etc/x"}
        )
        self.assertIn("MAILRAVEN_CONFIG_FILE", str(e))
