"""Who may do what, in one place: a team's records are read by its members, written by its clinicians and
admins, administered by its admins. Another team's records do not exist for a user (404); a member whose
role does not allow an action is refused (403).

Queries scope themselves with the `for_user` queryset methods of patients.models; the functions here
answer the questions that are not a query: which team an API call means, and whether a role may act.
"""

from __future__ import annotations

from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError

from .choices import WRITE_ROLES
from .models import Team, teams_of


def writable_team(user, slug: str | None, *, action: str) -> Team:
    """The team an API write goes to: the named one, or the user's only team.

    404 for a team the user is not in, 400 when the user is in several and named none, 403 when the user
    is only a viewer there. `action` completes "only clinicians and admins of <team> may ...".
    """
    teams = teams_of(user)
    if slug:
        team = teams.filter(slug=slug).first()
        if team is None:
            raise NotFound(f"no team {slug!r} among yours")
    else:
        mine = list(teams.order_by("slug")[:10])
        if not mine:
            raise PermissionDenied("you are not a member of any team")
        if len(mine) > 1:
            raise ValidationError(
                {"team": [f"you belong to several teams ({', '.join(t.slug for t in mine)}); name one"]}
            )
        team = mine[0]
    if not teams_of(user, WRITE_ROLES).filter(pk=team.pk).exists():
        raise PermissionDenied(f"only clinicians and admins of {team.slug} may {action}")
    return team


def writes_anywhere(user) -> bool:
    """Whether the user is a clinician or admin of at least one team (else every write is refused)."""
    return teams_of(user, WRITE_ROLES).exists()
