"""`consumer orgs ...` and `consumer projects ...`: the organizations and projects events are
saved for."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from consumer.cli.common import report_eviction, settings_for
from consumer.errors import ConfigurationError


def register(commands: Any) -> None:
    orgs = commands.add_parser("orgs", help="organizations").add_subparsers(
        dest="action", required=True
    )
    org_create = orgs.add_parser("create", help="create an organization, print its id")
    org_create.add_argument("slug")
    org_create.add_argument("--name")
    org_create.add_argument("--id", type=int)
    org_create.set_defaults(func=cmd_orgs_create)
    org_delete = orgs.add_parser("delete", help="soft-delete an organization")
    org_delete.add_argument("slug")
    org_delete.set_defaults(func=cmd_orgs_delete)
    org_option = orgs.add_parser(
        "set-option",
        help="set an organization option (an unreleased group type's ingest feature, such as "
        "'organizations:uptime-domain-failure-ingest' true)",
    )
    org_option.add_argument("slug")
    org_option.add_argument("key")
    org_option.add_argument("value", nargs="?", help="the value as JSON: true, 3, '\"text\"'")
    org_option.add_argument("--unset", action="store_true", help="remove the option")
    org_option.set_defaults(func=cmd_orgs_set_option)

    projects = commands.add_parser("projects", help="projects").add_subparsers(
        dest="action", required=True
    )
    project_create = projects.add_parser("create", help="create a project, print its id")
    project_create.add_argument("org", help="organization slug")
    project_create.add_argument("slug")
    project_create.add_argument("--name")
    project_create.add_argument("--id", type=int)
    project_create.set_defaults(func=cmd_projects_create)
    project_delete = projects.add_parser("delete", help="soft-delete a project")
    project_delete.add_argument("project_id", type=int)
    project_delete.set_defaults(func=cmd_projects_delete)
    project_option = projects.add_parser(
        "set-option", help="set a project option (plugin settings such as '<plugin>:enabled')"
    )
    project_option.add_argument("project_id", type=int)
    project_option.add_argument("key")
    project_option.add_argument("value", nargs="?", help="the value as JSON: true, 3, '\"text\"'")
    project_option.add_argument("--unset", action="store_true", help="remove the option")
    project_option.set_defaults(func=cmd_projects_set_option)


def cmd_orgs_create(args: argparse.Namespace) -> int:
    import psycopg

    from consumer.errors import AdminError
    from consumer.storage.admin import create_organization
    from consumer.storage.pool import conninfo

    settings = settings_for(args)
    with psycopg.connect(conninfo(settings.database)) as conn:
        try:
            org_id = create_organization(conn, args.slug, args.name, args.id)
        except AdminError as error:
            print(f"consumer: {error}", file=sys.stderr)
            return 1
    print(org_id)
    return 0


def cmd_projects_create(args: argparse.Namespace) -> int:
    import psycopg

    from consumer.errors import AdminError
    from consumer.storage.admin import create_project, live_organization_id
    from consumer.storage.pool import conninfo

    settings = settings_for(args)
    with psycopg.connect(conninfo(settings.database)) as conn:
        try:
            organization_id = live_organization_id(conn, args.org)
        except AdminError as error:
            raise ConfigurationError(str(error)) from None
        try:
            project_id = create_project(conn, organization_id, args.slug, args.name, args.id)
        except AdminError as error:
            print(f"consumer: {error}", file=sys.stderr)
            return 1
    print(project_id)
    return 0


def _soft_delete(args: argparse.Namespace, kind: str, delete: Any, missing: str) -> int:
    """`orgs delete` and `projects delete`: `delete(storage)` marks the row deleted and evicts
    its cache entries; says which row it was, or that there was none."""
    from consumer.storage.store import Storage

    settings = settings_for(args)
    storage = Storage.open(settings)
    try:
        changed = delete(storage)
    finally:
        storage.close()
    if changed is None:
        print(f"consumer: no {kind} with {missing}", file=sys.stderr)
        return 1
    report_eviction(changed.evicted, settings)
    print(f"{kind} {changed.row.id} deleted at {changed.row.date_deleted}")
    return 0


def cmd_orgs_delete(args: argparse.Namespace) -> int:
    from consumer.storage.admin import delete_organization

    return _soft_delete(
        args,
        "organization",
        lambda storage: delete_organization(storage, args.slug),
        f"slug {args.slug!r}",
    )


def cmd_projects_delete(args: argparse.Namespace) -> int:
    from consumer.storage.admin import delete_project

    return _soft_delete(
        args,
        "project",
        lambda storage: delete_project(storage, args.project_id),
        f"id {args.project_id}",
    )


def cmd_orgs_set_option(args: argparse.Namespace) -> int:
    import json

    from consumer.errors import AdminError
    from consumer.storage.admin import set_organization_option
    from consumer.storage.store import Storage

    if args.unset == (args.value is not None):
        raise ConfigurationError("give either a JSON value or --unset")
    try:
        value = None if args.value is None else json.loads(args.value)
    except ValueError:
        raise ConfigurationError("option value must be JSON (true, 3, '\"text\"')") from None
    storage = Storage.open(settings_for(args))
    try:
        set_organization_option(storage, args.slug, args.key, value)
    except AdminError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    return 0


def cmd_projects_set_option(args: argparse.Namespace) -> int:
    import json

    from consumer.errors import AdminError
    from consumer.storage.admin import set_project_option
    from consumer.storage.store import Storage

    if args.unset == (args.value is not None):
        raise ConfigurationError("give either a JSON value or --unset")
    value = None
    if args.value is not None:
        try:
            value = json.loads(args.value)
        except ValueError:
            raise ConfigurationError(
                f"option value must be JSON (a string is quoted: '\"{args.value}\"')"
            ) from None
    settings = settings_for(args)
    storage = Storage.open(settings)
    try:
        evicted = set_project_option(storage, args.project_id, args.key, value)
    except AdminError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    report_eviction(evicted, settings)
    return 0
