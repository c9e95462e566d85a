"""Every page and API route, called by every role of the owning team, by a user of another team and by
nobody: the expected status for each, and never a byte of team A's patient data for anyone outside it.

The routes are read from the URL configuration itself, so a route added without an entry in RULES makes
`test_every_route_has_a_rule` fail: nobody can add a page and forget to decide who may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from analysis.models import SeverityModel
from patients.models import Cohort, Instance, RadiologyReport, Upload
from tests.analysis.exported import series_with_run

SECRET = "A-SWEEP-0001"  # team A's patient: must never appear in a response to another team or to nobody
ACTORS = ("team_admin", "clinician", "viewer", "outsider", "anonymous")
MEMBERS = ("team_admin", "clinician", "viewer")
OK = "ok"  # any answer but a refusal or a server error: 2xx, a 3xx elsewhere than the login page, or a 400
LOGIN = "login"  # a redirect to the login page


@dataclass(frozen=True)
class Rule:
    method: str
    expect: dict[str, object]  # actor -> an HTTP status, OK or LOGIN
    query: str = ""
    data: dict = field(default_factory=dict)


def page(method: str = "GET", *, readers=MEMBERS, refused=403, outsider=404, query: str = "", data=None) -> Rule:
    """A page (session login). `readers` may use it; the team's other members get `refused`."""
    expect = {actor: OK if actor in readers else refused for actor in MEMBERS}
    expect.update(outsider=outsider, anonymous=LOGIN)
    return Rule(method, expect, query, data or {})


def api(method: str = "GET", *, readers=MEMBERS, refused=403, outsider=404, query: str = "", data=None) -> Rule:
    """An API route: like a page, but nobody gets 401 instead of a redirect."""
    rule = page(method, readers=readers, refused=refused, outsider=outsider, query=query, data=data)
    return Rule(rule.method, {**rule.expect, "anonymous": 401}, rule.query, rule.data)


WRITERS = ("team_admin", "clinician")
ADMINS = ("team_admin",)
ANYONE = {actor: OK for actor in ACTORS}
TEAM_LESS = {actor: OK for actor in (*MEMBERS, "outsider")}  # pages of no single team

# Route (as written in the URL configuration) -> the rules for it.
RULES: dict[str, list[Rule]] = {
    # --- open to everybody
    "health/": [Rule("GET", ANYONE)],
    "login/": [Rule("GET", ANYONE)],
    "logout/": [Rule("POST", dict.fromkeys(ACTORS, LOGIN))],  # back to the login page
    "api/schema/": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/docs/": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    # --- pages of no single team: every signed-in user, scoped inside
    "": [Rule("GET", {**TEAM_LESS, "anonymous": LOGIN})],
    "account/": [Rule("GET", {**TEAM_LESS, "anonymous": LOGIN})],
    "account/token/": [Rule("POST", {**TEAM_LESS, "anonymous": LOGIN})],
    "account/token/revoke/": [Rule("POST", {**TEAM_LESS, "anonymous": LOGIN})],
    "account/password/": [Rule("GET", {**TEAM_LESS, "anonymous": LOGIN})],
    "upload/": [Rule("GET", {"team_admin": OK, "clinician": OK, "viewer": 403, "outsider": OK, "anonymous": LOGIN})],
    "cohorts/": [Rule("GET", {**TEAM_LESS, "anonymous": LOGIN})],
    "agreement/": [Rule("GET", {**TEAM_LESS, "anonymous": LOGIN})],
    "reports/import/": [Rule("GET", {**TEAM_LESS, "viewer": 403, "anonymous": LOGIN})],
    "cohorts/new/": [
        Rule("GET", {"team_admin": OK, "clinician": 403, "viewer": 403, "outsider": 403, "anonymous": LOGIN})
    ],
    # --- one patient's records
    "patients/<int:patient_id>/": [page()],
    "series/<int:series_id>/": [page()],
    "series/<int:series_id>/status.json": [page()],
    "series/<int:series_id>/viewer/": [page()],
    "series/<int:series_id>/instances/<int:index>/": [page()],
    "series/<int:series_id>/overlays/<int:index>.png": [page(query="layer=infection")],
    "series/<int:series_id>/surfaces.json": [page()],
    "series/<int:series_id>/deidentified.zip": [page(readers=WRITERS)],
    "runs/<int:run_id>/retry/": [page("POST", readers=WRITERS)],
    "runs/<int:run_id>/export/<slug:kind>/": [page()],
    "runs/<int:run_id>/send-to-pacs/": [page("POST", readers=WRITERS)],
    "uploads/<int:upload_id>/": [page()],
    "studies/<int:study_id>/reports/": [page("POST", readers=WRITERS)],
    # --- team administration
    "teams/<slug:slug>/settings/": [page(readers=ADMINS), page("POST", readers=ADMINS)],
    "teams/<slug:slug>/audit/": [page(readers=ADMINS)],
    "teams/<slug:slug>/audit.csv": [page(readers=ADMINS)],
    "teams/<slug:slug>/lexicon/": [page(readers=ADMINS), page("POST", readers=ADMINS)],
    # --- cohorts and severity
    "cohorts/<int:cohort_id>/": [page()],
    "cohorts/<int:cohort_id>/export.csv": [page()],
    "cohorts/<int:cohort_id>/members/": [page("POST", readers=ADMINS)],
    "cohorts/<int:cohort_id>/severity/": [page("POST", readers=WRITERS)],
    "cohorts/<int:cohort_id>/severity/import/": [page("POST", readers=WRITERS)],
    "cohorts/<int:cohort_id>/fit/": [page("POST", readers=ADMINS)],
    "severity-models/<int:model_id>/activate/": [page("POST", readers=ADMINS)],
    # --- REST API
    "api/^patients/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^patients/(?P<pk>[^/.]+)/$": [api()],
    "api/^studies/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^studies/(?P<pk>[^/.]+)/$": [api()],
    "api/^series/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^series/(?P<pk>[^/.]+)/$": [api()],
    "api/^uploads/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^uploads/(?P<pk>[^/.]+)/$": [api()],
    "api/^analyses/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^analyses/(?P<pk>[^/.]+)/$": [api()],
    "api/^analyses/(?P<pk>[^/.]+)/retry/$": [api("POST", readers=WRITERS)],
    "api/^analyses/(?P<pk>[^/.]+)/export/(?P<kind>[a-z-]+)/$": [api()],
    "api/^cohorts/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^cohorts/(?P<pk>[^/.]+)/$": [api()],
    "api/^cohorts/(?P<pk>[^/.]+)/fit/$": [api("POST", readers=ADMINS)],
    "api/^severity-models/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^severity-models/(?P<pk>[^/.]+)/$": [api()],
    "api/^severity-models/(?P<pk>[^/.]+)/activate/$": [api("POST", readers=ADMINS)],
    "api/^reports/$": [Rule("GET", {**TEAM_LESS, "anonymous": 401})],
    "api/^reports/(?P<pk>[^/.]+)/$": [api()],
    "api/^reports/import/$": [Rule("POST", {**TEAM_LESS, "viewer": 403, "anonymous": 401})],
    # --- DICOMweb (token or session; searches are scoped, retrievals of another team's UIDs are 404)
    "dicomweb/studies": [api(outsider=OK), api("POST", readers=WRITERS, outsider=OK)],
    "dicomweb/series": [api(outsider=OK)],
    "dicomweb/instances": [api(outsider=OK)],
    "dicomweb/studies/<str:study>": [api()],
    "dicomweb/studies/<str:study>/metadata": [api()],
    "dicomweb/studies/<str:study>/series": [api(outsider=OK)],  # a search: empty for another team
    "dicomweb/studies/<str:study>/instances": [api(outsider=OK)],  # a search: empty for another team
    "dicomweb/studies/<str:study>/series/<str:series>": [api()],
    "dicomweb/studies/<str:study>/series/<str:series>/metadata": [api()],
    "dicomweb/studies/<str:study>/series/<str:series>/instances": [
        api(outsider=OK)
    ],  # a search: empty for another team
    "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>": [api()],
    "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/metadata": [api()],
    "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/rendered": [api()],
    "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/frames/<str:frame_list>": [api()],
    "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/frames/<str:frame_list>/rendered": [
        api()
    ],
}
# Routes not called here, and why.
NOT_SWEPT = {
    "api/<drf_format_suffix:format>": "the API root again with a format suffix",
}
# Request headers per route prefix (what a real client of that route sends).
HEADERS = {"dicomweb/": {"HTTP_ACCEPT": "*/*"}}


def routes() -> list[str]:
    """Every route of the URL configuration, the admin site and DRF's format-suffix twins left out."""
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue  # Django's admin: staff only, checked by test_the_admin_site_is_closed_to_team_users
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                if "(?P<format>" not in route and route not in found:
                    found.append(route)

    walk(get_resolver().url_patterns, "")
    return found


def test_every_route_has_a_rule():
    missing = [route for route in routes() if route not in RULES and route not in NOT_SWEPT]
    assert missing == [], f"routes without a permission rule in {__name__}.RULES: {missing}"
    stale = [route for route in RULES if route not in routes()]
    assert stale == [], f"rules for routes that no longer exist: {stale}"


@pytest.fixture
def world(team_a, team_b, team_admin, clinician, viewer, outsider, tmp_path) -> dict[str, object]:
    """Team A's records that every route can name: a stored series with a finished run, and the rest."""
    series, run, _volume = series_with_run(team_a, tmp_path / "scan", patient_id=SECRET)
    study = series.study
    study.study_date = date(2026, 2, 1)
    study.save(update_fields=["study_date"])
    patient = study.patient
    instance = Instance.objects.filter(series=series).order_by("index").first()
    cohort = Cohort.objects.create(team=team_a, name="Sweep cohort")
    cohort.patients.add(patient)
    model = SeverityModel.objects.create(
        team=team_a,
        cohort=cohort,
        name="POI",
        features=["poi"],
        coefficients=[1.0],
        intercept=0.0,
        scaler_mean=[0.1],
        scaler_scale=[0.1],
        n_severe=5,
        n_non_severe=5,
    )
    report = RadiologyReport.objects.create(study=study, text="Lesions progressed.", content_hash="sweep")
    return {
        "patient_id": patient.pk,
        "series_id": series.pk,
        "run_id": run.pk,
        "upload_id": Upload.objects.get().pk,
        "study_id": study.pk,
        "cohort_id": cohort.pk,
        "model_id": model.pk,
        "slug": team_a.slug,
        "index": instance.index,
        "kind": "csv",
        "study": study.study_instance_uid,
        "series": series.series_instance_uid,
        "instance": instance.sop_instance_uid,
        "frame_list": "1",
        "pk": {
            "patients": patient.pk,
            "studies": study.pk,
            "series": series.pk,
            "uploads": Upload.objects.get().pk,
            "analyses": run.pk,
            "cohorts": cohort.pk,
            "severity-models": model.pk,
            "reports": report.pk,
        },
    }


def url_of(route: str, world: dict) -> str:
    """The route with team A's records filled in."""

    def converter(match: re.Match) -> str:
        return str(world[match.group(1)])

    url = route
    if "(?P<pk>" in url:
        resource = url.split("^", 1)[1].split("/", 1)[0]
        url = url.replace("(?P<pk>[^/.]+)", str(world["pk"][resource]))
    url = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(world[m.group(1)]), url)
    url = re.sub(r"<(?:\w+:)?(\w+)>", converter, url)
    return "/" + url.replace("^", "").replace("$", "")


def _verdict(response) -> object:
    status = response.status_code
    if status == 302 and "/login/" in response.get("Location", ""):
        return LOGIN
    if status < 400 or status in (400, 409):  # 409: the record's state forbids it (a finished run's retry)
        return OK
    return status


def _body(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


@pytest.mark.parametrize("actor", ACTORS)
def test_each_route_answers_each_actor_as_its_rule_says(client, request, world, actor, settings):
    settings.PACS_HOST = ""  # no PACS: a send is refused with a message, never a network call
    user = None if actor == "anonymous" else request.getfixturevalue(actor)
    wrong: list[str] = []
    # Writers last: an allowed POST changes state (a token replaced, a model activated) only after the rest.
    for route, rules in RULES.items():
        for rule in rules:
            if actor not in rule.expect:
                continue
            client.logout()
            if user is not None:
                client.force_login(user)
            url = url_of(route, world) + (f"?{rule.query}" if rule.query else "")
            headers = next((h for prefix, h in HEADERS.items() if route.startswith(prefix)), {})
            response = (
                client.generic(rule.method, url, **headers)
                if rule.method != "POST"
                else client.post(url, rule.data, **headers)
            )
            verdict = _verdict(response)
            if verdict != rule.expect[actor]:
                wrong.append(f"{rule.method} {url}: {verdict}, expected {rule.expect[actor]}")
            if actor in ("outsider", "anonymous") and SECRET.encode() in _body(response):
                wrong.append(f"{rule.method} {url}: leaks team A's patient identifier to {actor}")
    assert wrong == [], "\n".join(wrong)


def test_the_admin_site_is_closed_to_team_users(client, team_admin):
    client.force_login(team_admin)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
