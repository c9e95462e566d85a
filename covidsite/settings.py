"""Django settings for covidsite.

Every value that differs between a laptop and a hospital deployment comes from the
environment, read through the small typed helpers below; a bad value raises
ImproperlyConfigured at start-up rather than misbehaving later. `.env.example` lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, default: str | None) -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    value = os.environ.get(name)
    if value:
        return value
    if default is None:
        raise ImproperlyConfigured(f"{name} must be set when DEBUG is off")
    return default


DEBUG = env_bool("DEBUG", True)
# A fixed development key is fine on a laptop; production (DEBUG off) must provide one.
SECRET_KEY = env_secret("SECRET_KEY", "dev-insecure-covidsite-key-change-me" if DEBUG else None)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

VAR_DIR = Path(env_str("COVIDSITE_VAR_DIR", str(BASE_DIR / "var")))
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"  # never served directly: instances go through permission-checked views
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATIC_URL = "/static/"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.staticfinders.PlotlyFinder",  # plotly.js from the plotly package, no CDN
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "patients",
    "analysis",
    "frontend",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "covidsite.outages.DatabaseOutageMiddleware",
]

ROOT_URLCONF = "covidsite.urls"
WSGI_APPLICATION = "covidsite.wsgi.application"
ASGI_APPLICATION = "covidsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'covidsite.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
except Exception as exc:  # dj_database_url raises several types for a malformed URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the SQLite file's folder must exist before connecting
    # The web server and the worker write the same file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-covidsite.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login throttling (audit.lockout): this many failed logins for one user name or from one address
# within the window lock further tries until the window has passed.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15)
# Reverse proxies in front of the app whose X-Forwarded-For may be believed for audit addresses (0: none).
AUDIT_TRUSTED_PROXIES = env_int("AUDIT_TRUSTED_PROXIES", 0)
AUTHENTICATION_BACKENDS = ["audit.backends.LockoutModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "patient-list"
LOGOUT_REDIRECT_URL = "login"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Upload limits: one study can be large (a 600-slice thin scan is ~300 MB uncompressed).
UPLOAD_MAX_FILE_MB = env_int("UPLOAD_MAX_FILE_MB", 64)
UPLOAD_MAX_TOTAL_MB = env_int("UPLOAD_MAX_TOTAL_MB", 2048)
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 5000)
UPLOAD_MAX_ARCHIVE_EXPANDED_MB = env_int("UPLOAD_MAX_ARCHIVE_EXPANDED_MB", 4096)
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None
# Stream every uploaded file to a temporary file, never into memory: studies run to hundreds of MB.
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]

# DICOM listener (manage.py dicom_listener): a pushed series is ingested once no image of it arrived for
# DICOM_LISTENER_QUIET_SECONDS (scanners send a series over one or several associations, never "done").
DICOM_LISTENER_PORT = env_int("DICOM_LISTENER_PORT", 11112)
DICOM_LISTENER_AE_TITLE = env_str("DICOM_LISTENER_AE_TITLE", "COVIDSITE")
DICOM_LISTENER_QUIET_SECONDS = env_int("DICOM_LISTENER_QUIET_SECONDS", 30)
if DICOM_LISTENER_QUIET_SECONDS < 0:
    raise ImproperlyConfigured(f"DICOM_LISTENER_QUIET_SECONDS must be 0 or more, got {DICOM_LISTENER_QUIET_SECONDS}")
# The PACS that analyses are sent back to (DICOM SEG and SR by C-STORE; this site calls as
# DICOM_LISTENER_AE_TITLE). An empty PACS_HOST turns sending back off.
PACS_HOST = env_str("PACS_HOST", "")
PACS_PORT = env_int("PACS_PORT", 104)
PACS_AE_TITLE = env_str("PACS_AE_TITLE", "PACS")

REST_FRAMEWORK = {
    # Token first: a script without (or with a revoked) token gets 401 with WWW-Authenticate, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "covidsite API",
    "DESCRIPTION": "Chest CT infection quantification: patients, studies, series, uploads and analyses.",
    "VERSION": "0.1.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],  # a hospital's API is not public
    # One schema name per choice class (several models share them).
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "analysis.choices.RunStatus",
        "SeriesStatusEnum": "patients.choices.SeriesStatus",
        "RegionEnum": "analysis.choices.Region",
    },
}

# Celery. The laptop default is kombu's filesystem transport: web and worker exchange messages
# through a folder, so no Redis is needed. Production sets CELERY_BROKER_URL=redis://...
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_QUEUE_DIR = VAR_DIR / "celery-queue"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_QUEUE_DIR),
        "data_folder_out": str(CELERY_QUEUE_DIR),
        "processed_folder": str(CELERY_QUEUE_DIR / "processed"),
        "store_processed": False,
        # kombu keeps fanout (remote control) state here; its default is ./control in the cwd.
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
    }
else:
    # Redis redelivers unacknowledged tasks after this many seconds; must exceed the longest analysis.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True  # run state is a database row, not a Celery result
CELERY_TASK_ACKS_LATE = True  # a killed worker's task is redelivered and redone
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_ANALYSIS_QUEUE = env_str("CELERY_ANALYSIS_QUEUE", "celery")

# Where the trained weights live (committed with the code); a deployment may point elsewhere.
MODEL_DIR = Path(env_str("MODEL_DIR", str(BASE_DIR / "analysis" / "nets" / "weights")))

# Transport and browser security. Production (DEBUG off) defaults to HTTPS only; behind a TLS-terminating
# proxy set SECURE_PROXY_SSL_HEADER=true so Django knows the original request was HTTPS.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # pages send the token from the form, never read the cookie
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# A shared ward computer: sessions end after a working day and when the browser closes.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health/$"]  # load balancers probe over plain HTTP
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)  # the header alone enrols nothing
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
