"""The mailraven command: accounts, backups, verify, quickstart.

Works whether or not the server runs (SQLite in WAL mode takes a second
writer). Every sub-command takes --config FILE and --data-dir DIR (before or
after its name) and honours the same environment as the server. Only
quickstart and restore make a data dir: the other commands refuse a data dir
that does not exist, rather than quietly starting a second, empty one.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from typing import Any, Sequence

from mailraven import __version__
from mailraven import config as configuration
from mailraven.backup import (
    BackupError,
    createBackup,
    restoreBackup,
    terminalReport,
    verifyBackup,
)
from mailraven.dnsrecords import dmarcAdvice
from mailraven.domainkeys import (
    MissingKey,
    NoServerKey,
    checkKeyDirectory,
    configuredRecords,
    domainKeyPath,
    domainRecords,
    ensureDomainKey,
    existingDomainKey,
    selectorFor,
)
from mailraven.quickstart import dkimSelector, quickstart
from mailraven.startup import (
    StartupError,
    databasePath,
    ensureLayout,
    serverHolding,
)
from mailraven.store.aliases import (
    AliasIsAccount,
    UnknownMember,
    addAlias,
    listAliases,
    normaliseAlias,
    removeAlias,
)
from mailraven.store.db import openDatabase
from mailraven.store.domains import (
    BadDomain,
    ConfiguredDomain,
    DomainExists,
    DomainInUse,
    addDomain,
    checkNotConfigured,
    domainNames,
    listDomains,
    normaliseDomain,
    removeDomain,
)
from mailraven.store.integrity import checkIntegrity
from mailraven.store.quotas import MAX_LIMIT, effectiveLimit, quotaOf, setQuotaLimit
from mailraven.store.users import (
    MIN_PASSWORD_LENGTH,
    BadAddress,
    UserExists,
    addUser,
    adminEmails,
    listUsers,
    normaliseAddress,
    passwordSecrets,
    removeUser,
    setAdmin,
    setPasswordHash,
)


class CommandError(Exception):
    """Printed as C{mailraven: <message>}, exit status 1."""


def _password(args: argparse.Namespace) -> str:
    try:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                raise CommandError("the passwords differ")
        else:
            raise CommandError(
                "no terminal to ask for a password: use --password-stdin"
            )
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # the prompt left the cursor on its line
        raise CommandError("no password given") from None
    if not password:
        raise CommandError("the password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CommandError(
            f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters"
        )
    return password


def _open(config: configuration.Config):
    """The data dir's database; refuses a data dir that does not exist yet."""
    path = databasePath(config.dataDir)
    if not os.path.exists(path):
        raise CommandError(
            f"no data dir at {config.dataDir}: start the server once (or run"
            " `mailraven quickstart`), or pass --data-dir or --config"
        )
    ensureLayout(config.dataDir)
    return openDatabase(path)


def _create(config: configuration.Config):
    """The data dir's database, made when missing (quickstart only)."""
    ensureLayout(config.dataDir)
    return openDatabase(databasePath(config.dataDir))


def _address(text: str) -> str:
    try:
        return normaliseAddress(text)
    except BadAddress as e:
        raise CommandError(str(e)) from None


def _inDataDir(config: configuration.Config) -> str:
    return f"(data dir {config.dataDir})"


def userAdd(config, args) -> int:
    email = _address(args.email)
    conn = _open(config)
    hashed, scram = passwordSecrets(_password(args))
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            addUser(conn, email, hashed, admin=args.admin, scram=scram)
    except UserExists:
        raise CommandError(f"{email} already exists {_inDataDir(config)}") from None
    domains = set(config["server.domains"]) | domainNames(conn)
    print(f"added {email} {_inDataDir(config)}")
    if email.rpartition("@")[2] not in domains:
        print(
            f"note: {email.rpartition('@')[2]} is not in server.domains nor added"
            " with `mailraven domain add`; mail to it"
            " is accepted because an account exists there"
        )
    return 0


def userPasswd(config, args) -> int:
    email = _address(args.email)
    conn = _open(config)
    hashed, scram = passwordSecrets(_password(args))
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        found = setPasswordHash(conn, email, hashed, scram)
    if not found:
        raise CommandError(f"no such user: {email} {_inDataDir(config)}")
    print(f"password changed for {email} {_inDataDir(config)}")
    return 0


def userDel(config, args) -> int:
    email = _address(args.email)
    conn = _open(config)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        orphans = [
            alias
            for alias, members in listAliases(conn).items()
            if [m.lower() for m in members] == [email.lower()]
        ]
        found = removeUser(conn, email)
    if not found:
        raise CommandError(f"no such user: {email} {_inDataDir(config)}")
    print(f"removed {email} {_inDataDir(config)}")
    if orphans:
        print(f"removed with it (it was their only member): {', '.join(orphans)}")
    return 0


def userAdmin(config, args) -> int:
    """The admin role: the admin API, and postmaster@/abuse@ mail when
    server.postmaster is unset."""
    email = _address(args.email)
    conn = _open(config)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        found = setAdmin(conn, email, not args.revoke)
    if not found:
        raise CommandError(f"no such user: {email} {_inDataDir(config)}")
    print(
        f"{email} is {'no longer ' if args.revoke else ''}an admin {_inDataDir(config)}"
    )
    return 0


def userList(config, args) -> int:
    conn = _open(config)
    emails = listUsers(conn)
    for email in emails:
        print(email)
    # stdout stays one address a line for scripts
    admins = ", ".join(adminEmails(conn)) or "none"
    print(
        f"{len(emails)} accounts, admin: {admins} {_inDataDir(config)}",
        file=sys.stderr,
    )
    return 0


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parseSize(text: str) -> int:
    """Bytes from C{12345}, C{500M} or C{1G} (binary units); 0 = unlimited."""
    number, unit = text.strip().upper(), ""
    if number[-1:] in "KMGT" and number[-1:]:
        number, unit = number[:-1], number[-1]
    if not number.isdigit():
        raise CommandError(f"not a size: {text!r} (bytes, or a number with K, M, G, T)")
    size = int(number) * _UNITS[unit]
    if size > MAX_LIMIT:
        raise CommandError(
            f"too large: {text!r} (at most {MAX_LIMIT} bytes; 0 = unlimited)"
        )
    return size


def userQuota(config, args) -> int:
    """Show an account's usage and limit, or set its own limit (or drop it)."""
    email = _address(args.email)
    conn = _open(config)
    if args.default or args.limit is not None:
        limit = None if args.default else parseSize(args.limit)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            found = setQuotaLimit(conn, email, limit)
        if not found:
            raise CommandError(f"no such user: {email} {_inDataDir(config)}")
    found = quotaOf(conn, email)
    if found is None:
        raise CommandError(f"no such user: {email} {_inDataDir(config)}")
    used, own = found
    limit = effectiveLimit(own, config["quota.default"])
    source = "quota.default" if own is None else "own"
    print(
        f"{email}: {used} bytes used of"
        f" {'unlimited' if limit is None else f'{limit} bytes'} ({source})"
    )
    return 0


def _aliasAddress(text: str) -> str:
    """The alias's normalised address; its domain must be one of ours (an
    alias of any other domain would only be a way to relay)."""
    try:
        address = normaliseAlias(text)
    except BadAddress as e:
        raise CommandError(str(e)) from None
    return address


def _localDomains(config, conn) -> set[str]:
    return (
        set(config["server.domains"])
        | domainNames(conn)
        | {email.rpartition("@")[2].lower() for email in listUsers(conn)}
    )


def aliasAdd(config, args) -> int:
    address = _aliasAddress(args.address)
    conn = _open(config)
    domain = address.rpartition("@")[2]
    try:
        with conn:
            # checked under the write lock: a domain removed meanwhile by
            # another process cannot leave this alias behind
            conn.execute("BEGIN IMMEDIATE")
            if domain not in _localDomains(config, conn):
                raise CommandError(
                    f"{domain} is not a local domain (server.domains, one added"
                    " with `mailraven domain add`, or a domain with an account):"
                    " an alias there would relay"
                )
            address = addAlias(conn, address, args.members)
    except (UnknownMember, AliasIsAccount) as e:
        raise CommandError(f"{e} {_inDataDir(config)}") from None
    members = listAliases(conn)[address]
    print(f"{address} -> {', '.join(members)} {_inDataDir(config)}")
    return 0


def aliasRemove(config, args) -> int:
    """The whole alias, or the members named after it."""
    address = _aliasAddress(args.address)
    members = [_address(m) for m in args.members]
    conn = _open(config)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        found = removeAlias(conn, address, members)
    if not found:
        what = f"{', '.join(members)} in " if members else ""
        raise CommandError(f"no such alias: {what}{address} {_inDataDir(config)}")
    if not members:
        print(f"removed {address} {_inDataDir(config)}")
        return 0
    aliases = {alias.lower(): kept for alias, kept in listAliases(conn).items()}
    left = aliases.get(address.lower(), [])
    print(
        f"removed {', '.join(members)} from {address}"
        + (f"; left: {', '.join(left)}" if left else "; the alias is gone")
        + f" {_inDataDir(config)}"
    )
    return 0


def aliasList(config, args) -> int:
    aliases = listAliases(_open(config))
    for address, members in aliases.items():
        print(f"{address} {' '.join(members)}")
    # stdout stays one alias a line for scripts
    print(f"{len(aliases)} aliases {_inDataDir(config)}", file=sys.stderr)
    return 0


def _existingBackup(path: str) -> str:
    """A mistyped path is the operator's error, not a damaged backup."""
    if not os.path.isdir(path):
        raise CommandError(f"no backup at {os.path.abspath(path)}: no such directory")
    return path


def domainAdd(config, args) -> int:
    name = _domainName(args.domain)
    _notConfigured(config, name)
    try:
        checkKeyDirectory(config.dataDir, name)
    except BadDomain as e:
        raise CommandError(str(e)) from None
    conn = _open(config)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            selector = selectorFor(config.dataDir, name, dkimSelector())
            domain = addDomain(conn, name, selector)
            # in the transaction: a key that cannot be written adds nothing;
            # after the row: a refused add makes no key
            publicKey = ensureDomainKey(config.dataDir, domain.name, domain.selector)
    except DomainExists as e:
        raise CommandError(f"{e} {_inDataDir(config)}") from None
    print(f"added {domain.name} {_inDataDir(config)}")
    print(
        "DKIM key: "
        + domainKeyPath(config.dataDir, domain.name, domain.selector)
        + "\n\nPublish these DNS records:"
    )
    print(domainRecords(config, domain.name, domain.selector, publicKey))
    return 0


def domainRemove(config, args) -> int:
    name = _domainName(args.domain)
    _notConfigured(config, name)
    conn = _open(config)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            found = removeDomain(conn, name)
    except DomainInUse as e:
        raise CommandError(f"{e} {_inDataDir(config)}") from None
    if not found:
        raise CommandError(f"no such domain: {name} {_inDataDir(config)}")
    print(
        f"removed {name} {_inDataDir(config)}; its DKIM key stays in"
        f" {os.path.dirname(domainKeyPath(config.dataDir, name, 'x'))}"
    )
    return 0


def domainList(config, args) -> int:
    domains = listDomains(_open(config))
    for domain in domains:
        print(f"{domain.name} {domain.selector} {domain.addedAt}")
    # stdout stays one domain a line for scripts
    print(
        f"{len(domains)} added domains {_inDataDir(config)}; server.domains:"
        f" {', '.join(config['server.domains']) or '(none)'}",
        file=sys.stderr,
    )
    return 0


def domainRecordsCommand(config, args) -> int:
    """What C{domain add} printed, again (the key is read, not remade); for
    a configured domain, the server key's records, as quickstart printed."""
    name = _domainName(args.domain)
    try:
        checkNotConfigured(name, config["server.domains"])
    except ConfiguredDomain:
        return _configuredRecords(config, name)
    domain = next((d for d in listDomains(_open(config)) if d.name == name), None)
    if domain is None:
        raise CommandError(f"no such added domain: {name} {_inDataDir(config)}")
    try:
        publicKey = existingDomainKey(config.dataDir, domain.name, domain.selector)
    except MissingKey as e:
        raise CommandError(str(e)) from None
    print(domainRecords(config, domain.name, domain.selector, publicKey))
    return 0


def _configuredRecords(config, name: str) -> int:
    try:
        selector, zone = configuredRecords(config, config.dataDir, name)
    except NoServerKey as e:
        raise CommandError(f"{name} is in server.domains but {e}") from None
    print(
        f"{name} is in server.domains: it signs with the server key"
        f" {os.path.join(config.dataDir, 'dkim', selector + '.key')}",
        file=sys.stderr,
    )
    print(f"{zone}\n\n{dmarcAdvice(name)}")
    return 0


def _notConfigured(config, name: str) -> None:
    try:
        checkNotConfigured(name, config["server.domains"])
    except ConfiguredDomain as e:
        raise CommandError(str(e)) from None


def _domainName(text: str) -> str:
    try:
        return normaliseDomain(text)
    except BadDomain as e:
        raise CommandError(str(e)) from None


def verify(config, args) -> int:
    if args.backup:
        _existingBackup(args.backup)
        problems = verifyBackup(args.backup)
        for line in problems:
            print(f"DAMAGED {line}")
        print(
            f"backup {args.backup}: "
            + ("OK" if not problems else f"{len(problems)} problems")
        )
        return 0 if not problems else 2
    report = checkIntegrity(_open(config), config.dataDir, readFiles=not args.quick)
    for line in report.damage:
        print(f"DAMAGED {line}")
    for relpath in report.orphans:
        print(f"orphan  {relpath} (no row refers to it)")
    print(
        f"{report.messages} messages checked in {config.dataDir}: "
        + ("OK" if report.ok else f"{len(report.damage)} problems")
    )
    return 0 if report.ok else 2


def _report():
    return terminalReport if sys.stderr.isatty() else None


def _endReport() -> None:
    """End the progress line on a terminal, so the summary starts a line."""
    if sys.stderr.isatty():
        print(file=sys.stderr)


def backup(config, args) -> int:
    _open(config).close()
    try:
        manifest = createBackup(config.dataDir, args.to, args.config, _report())
    except BackupError as e:
        raise CommandError(str(e)) from None
    counts = manifest["counts"]
    _endReport()
    print(
        f"backup of {config.dataDir} written to {os.path.abspath(args.to)}:"
        f" {counts['users']} users,"
        f" {counts['messages']} messages, {len(manifest['files'])} files"
    )
    return 0


def restore(config, args) -> int:
    target = config.dataDir
    holder = serverHolding(target)
    if holder is not None:
        raise CommandError(
            f"a MailRaven server (pid {holder}) runs on {target}: stop it first"
        )
    _existingBackup(args.from_)
    try:
        manifest = restoreBackup(args.from_, target, args.force, _report())
    except BackupError as e:
        raise CommandError(str(e)) from None
    _endReport()
    print(f"restored {manifest['counts']['messages']} messages into {target}")
    if os.path.exists(os.path.join(args.from_, "mailraven.toml")):
        print(f"the backup's configuration is at {args.from_}/mailraven.toml")
    return 0


def dnsblCheck(config, args) -> int:
    """What every configured zone says about an address; exit 1 when listed."""
    from twisted.internet import task

    from mailraven.policy.dnsbl import DNSBLChecker, parseZone, queryName

    zones = [parseZone(spec) for spec in config["dnsbl.zones"]]
    if not zones:
        raise CommandError("no DNSBL zones configured (dnsbl.zones)")
    servers = [
        (host.strip("[]"), int(port))
        for host, _, port in (s.rpartition(":") for s in config["dns.nameservers"])
    ]

    def report(verdict, checker: DNSBLChecker) -> None:
        listed = {item.zone.name: item for item in verdict.listings}
        for zone in zones:
            name = queryName(args.ip, zone.name)
            if not checker.healthy[zone.name]:
                state = "UNHEALTHY (fails the RFC 5782 test; skipped by the server)"
            elif zone.name in listed:
                item = listed[zone.name]
                action = "reject" if zone.reject else f"score {zone.weight:g}"
                state = f"LISTED {','.join(item.codes)} ({action}): {item.reason}"
            elif any(e.startswith(zone.name + ":") for e in verdict.errors):
                state = "ERROR " + next(
                    e for e in verdict.errors if e.startswith(zone.name + ":")
                )
            else:
                state = "not listed"
            print(f"{zone.name:30} {name}\n{'':30} {state}")
        if verdict.timedOut:
            print("(the lookup budget ran out: the server would fail open)")
        if listed:
            raise SystemExit(1)

    def run(reactor):
        checker = DNSBLChecker.forServers(
            zones, servers, config["dns.timeout"], reactor, config["dns.timeout"] * 4
        )
        d = checker.checkHealth()
        d.addCallback(lambda _: checker.check(args.ip))
        d.addCallback(report, checker)
        return d

    task.react(run)
    return 0  # not reached: react exits


def runQuickstart(config, args) -> int:
    email = _address(args.email)
    password = _password(args) if args.password_stdin else secrets.token_urlsafe(12)
    conn = _create(config)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            hashed, scram = passwordSecrets(password)
            # the operator's own account: the admin API, and role mail
            addUser(conn, email, hashed, admin=True, scram=scram)
    except UserExists:
        raise CommandError(f"{email} already exists {_inDataDir(config)}") from None
    print(
        quickstart(
            config,
            email,
            args.config or "mailraven.toml",
            args.hostname,
            password if not args.password_stdin else None,
        )
    )
    return 0


def _addCommonOptions(parser: argparse.ArgumentParser, default: Any) -> None:
    """--config and --data-dir, on the main parser and every sub-command's.

    Sub-commands get C{argparse.SUPPRESS} as the default: their parser must
    not overwrite a value given before the sub-command's name.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=(
            os.environ.get(configuration.CONFIG_FILE_VARIABLE)
            if default is None
            else default
        ),
        help="TOML configuration file (default: $MAILRAVEN_CONFIG)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="the data dir (overrides server.data_dir)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mailraven",
        description=__doc__.split("\n")[0],
        epilog="The server itself runs under twistd:"
        " twistd -n mailraven [--config FILE]",
    )
    _addCommonOptions(p, None)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        cmd = parent.add_parser(name, **kwargs)
        _addCommonOptions(cmd, argparse.SUPPRESS)
        return cmd

    user = command(sub, "user", help="manage accounts").add_subparsers(
        dest="action", required=True
    )
    for name, func, helptext in (
        ("add", userAdd, "create an account"),
        ("passwd", userPasswd, "change a password"),
    ):
        cmd = command(user, name, help=helptext)
        cmd.add_argument("email", help="the account's address")
        cmd.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin"
            f" (at least {MIN_PASSWORD_LENGTH} characters)",
        )
        if name == "add":
            cmd.add_argument(
                "--admin",
                action="store_true",
                help="may use the admin API and gets postmaster@/abuse@ mail",
            )
        cmd.set_defaults(func=func)
    cmd = command(user, "del", help="remove an account and its mailbox entries")
    cmd.add_argument("email", help="the account's address")
    cmd.set_defaults(func=userDel)
    command(user, "list", help="list accounts").set_defaults(func=userList)
    cmd = command(user, "admin", help="make an account an admin (or --revoke)")
    cmd.add_argument("email", help="the account's address")
    cmd.add_argument("--revoke", action="store_true", help="no longer an admin")
    cmd.set_defaults(func=userAdmin)
    cmd = command(user, "quota", help="show usage, or set the account's limit")
    cmd.add_argument("email", help="the account's address")
    which = cmd.add_mutually_exclusive_group()
    which.add_argument("limit", nargs="?", help="bytes, or 500M / 1G; 0 = unlimited")
    which.add_argument("--default", action="store_true", help="use quota.default again")
    cmd.set_defaults(func=userQuota)

    alias = command(
        sub, "alias", help="addresses delivered to accounts (and catch-alls)"
    ).add_subparsers(dest="action", required=True)
    cmd = command(alias, "add", help="add accounts to an alias (made if new)")
    cmd.add_argument("address", help="alias@domain, or @domain for a catch-all")
    cmd.add_argument("members", nargs="+", metavar="MEMBER", help="an account")
    cmd.set_defaults(func=aliasAdd)
    cmd = command(
        alias, "remove", help="remove an alias (or a catch-all), or some members"
    )
    cmd.add_argument("address", help="the alias, or @domain for its catch-all")
    cmd.add_argument(
        "members", nargs="*", help="only these accounts (the alias stays for others)"
    )
    cmd.set_defaults(func=aliasRemove)
    command(alias, "list", help="list aliases and members").set_defaults(func=aliasList)

    domain = command(
        sub, "domain", help="local domains added at runtime, each with a DKIM key"
    ).add_subparsers(dest="action", required=True)
    cmd = command(domain, "add", help="add a domain; prints the DNS records")
    cmd.add_argument("domain", help="the domain, e.g. shop.example")
    cmd.set_defaults(func=domainAdd)
    cmd = command(domain, "remove", help="remove a domain without accounts")
    cmd.add_argument("domain", help="an added domain")
    cmd.set_defaults(func=domainRemove)
    command(domain, "list", help="list added domains").set_defaults(func=domainList)
    cmd = command(domain, "records", help="print an added domain's DNS records again")
    cmd.add_argument("domain", help="an added domain")
    cmd.set_defaults(func=domainRecordsCommand)

    cmd = command(sub, "verify", help="check the database and every message file")
    cmd.add_argument(
        "--quick", action="store_true", help="check that files exist, do not read them"
    )
    cmd.add_argument("--backup", metavar="DIR", help="verify this backup instead")
    cmd.set_defaults(func=verify)

    cmd = command(sub, "backup", help="hot backup of the data dir")
    cmd.add_argument(
        "--to", required=True, metavar="DIR", help="the new backup (must not exist)"
    )
    cmd.set_defaults(func=backup)

    cmd = command(
        sub, "restore", help="restore a backup (verified first) into the data dir"
    )
    cmd.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="DIR",
        help="a backup written by `mailraven backup`",
    )
    cmd.add_argument(
        "--force", action="store_true", help="restore into a data dir that is not empty"
    )
    cmd.set_defaults(func=restore)

    cmd = command(sub, "dnsbl-check", help="what each DNSBL zone says about IP")
    cmd.add_argument("ip", help="an IPv4 or IPv6 address")
    cmd.set_defaults(func=dnsblCheck)

    cmd = command(sub, "quickstart", help="config, first account, DKIM key, DNS")
    cmd.add_argument("email", help="the first account; its domain is the mail domain")
    cmd.add_argument(
        "--hostname", help="this server's public name (default mail.DOMAIN)"
    )
    cmd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the account's password from the first line of stdin"
        " (default: make one and print it)",
    )
    cmd.set_defaults(func=runQuickstart)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "quickstart" and args.config and os.path.exists(args.config):
            raise CommandError(f"{args.config} exists already; not overwriting it")
        config = configuration.load(
            args.config if args.command != "quickstart" else None
        )
        if args.data_dir:
            config = config.with_(server__data_dir=os.path.abspath(args.data_dir))
        return args.func(config, args)
    except (CommandError, configuration.ConfigError, StartupError) as e:
        print(f"mailraven: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
