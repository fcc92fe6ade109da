"""Countersign settings: one module, read from environment variables.

With no variables set, the embedded default applies: a SQLite file in WAL mode and a
private Redis server on a unix socket under ``var/`` (started by ``manage.py serve`` or
by the test suite). Production sets ``DATABASE_URL``, ``REDIS_URL`` and ``SECRET_KEY``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlparse

import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from config.databases import database_from_env
from config.env import env_bool, env_decimal, env_int, env_list, env_prices, env_share, password_masked

# Lets classes such as ModelAdmin[AuditEvent] be written as the type checker reads them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set the SECRET_KEY environment variable to a long random "
            "string (for local development, DEBUG=1 uses a built-in insecure key)."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" + (",testserver" if DEBUG else ""))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# The reverse proxies (addresses or networks) whose forwarding headers count: X-Forwarded-For is
# walked from the right past them to the client, and X-Forwarded-Proto says whether the client
# used HTTPS. Empty (the default): the client is the socket peer and those headers are ignored.
# The ASGI server runs with --no-proxy-headers; config/clients.py and config/middleware.py.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES holds {_proxy!r}, which is not an IP address or network: set TRUSTED_PROXIES to "
            "comma-separated addresses such as 10.0.0.5,10.1.0.0/16, or leave it empty."
        ) from None
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Embedded mode keeps its SQLite file and the private Redis socket here.
VAR_DIR = Path(os.environ.get("COUNTERSIGN_VAR_DIR") or BASE_DIR / "var").resolve()

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
    "guardian",
    "channels",
    "audit",
    "agents",
    "approvals",
    "config",  # the project package as an app: its management commands (serve)
]

MIDDLEWARE = [
    # First: forwarding headers from a peer not in TRUSTED_PROXIES are dropped, and REMOTE_ADDR is the client.
    "config.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # After the CSP middleware: it adds the websocket origin to the policy, and Cache-Control.
    "config.middleware.SecurityHeadersMiddleware",
    # Under /api/ every error is JSON in the one shape, 404s of unknown URLs and 500s included.
    "config.api.JSONErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The benchmark suite (python -m bench) reads each response's own time and query count.
if env_bool("COUNTERSIGN_BENCH", False):
    MIDDLEWARE.insert(0, "config.server_timing.ServerTimingMiddleware")

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "approvals.context_processors.firing_alerts",
            ],
        },
    },
]


# --- Database -------------------------------------------------------------------------

DATABASES = {"default": database_from_env(VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


# --- Redis: Celery broker and channel layer ------------------------------------------

EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    REDIS_URL = f"unix://{EMBEDDED_REDIS_SOCKET}"
elif urlparse(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(
        f"REDIS_URL={password_masked(REDIS_URL)!r} is not a Redis URL: set REDIS_URL to redis://host:6379/0, "
        "or unset it for the embedded default."
    )

CELERY_BROKER_URL = REDIS_URL.replace("unix://", "redis+socket://", 1)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = max(CELERY_TASK_TIME_LIMIT - 30, 1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Seconds a publish waits for the broker's answer (see the transport options below).
BROKER_TIMEOUT_SECONDS = env_int("BROKER_TIMEOUT_SECONDS", 2, minimum=2)
# The priority strategy drains the worker's queues in order: the sealer's short task, the sweep (lost
# doorbells, expired leases, overdue approvals: its period must hold under a burst), resumes, new runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "queue_order_strategy": "priority",
    # A task not acknowledged within this time is redelivered (worker lost mid-task).
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 60,
    # A broker that is down or hangs must not hold a request up: a publish gives up within
    # about 2 x (timeout + connect) seconds and the sweeper rings again (config/doorbell.py).
    # The read timeout stays above the worker's 1 s BRPOP.
    "socket_connect_timeout": 1,
    "socket_timeout": BROKER_TIMEOUT_SECONDS,
}
# One retry (a pooled connection a broker restart closed), no waiting between tries.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}
CELERY_TASK_ROUTES = {
    "agents.tasks.advance_run": {"queue": "runs"},
    "agents.tasks.resume_run": {"queue": "resumes"},
    "agents.tasks.sweep": {"queue": "sweeps"},
    "audit.tasks.seal": {"queue": "seals"},
}
CELERY_WORKER_QUEUES = "seals,sweeps,resumes,runs,default"
SWEEP_INTERVAL_SECONDS = env_int("SWEEP_INTERVAL_SECONDS", 10, minimum=1)
ALERTS_INTERVAL_SECONDS = env_int("ALERTS_INTERVAL_SECONDS", 60, minimum=1)
# Periodic tasks; one still queued when the next is due is dropped (each does all that is due):
# the sweep, the alert rules (approvals/alerts.py), the hourly roll-ups (agents/rollups.py), and the
# sealer behind `manage.py audit_seal --loop`.
CELERY_BEAT_SCHEDULE = {
    name: {"task": task, "schedule": float(seconds), "options": {"expires": float(seconds)}}
    for name, task, seconds in [
        ("sweep", "agents.tasks.sweep", SWEEP_INTERVAL_SECONDS),
        ("alerts", "approvals.tasks.evaluate_alerts", ALERTS_INTERVAL_SECONDS),
        ("rollup", "agents.tasks.rollup", 300),
        ("audit-seal", "audit.tasks.seal", 1),
    ]
}
# Audit checkpoints are signed with this Ed25519 key (audit/signing.py); without one, DEBUG keeps
# a generated key in the file. The sealer counts as behind when an event waits longer than this.
AUDIT_SIGNING_KEY = os.environ.get("AUDIT_SIGNING_KEY", "")
AUDIT_SIGNING_KEY_FILE = VAR_DIR / "audit-signing-key.pem" if DEBUG else None
AUDIT_SEAL_MAX_LAG_SECONDS = env_int("AUDIT_SEAL_MAX_LAG_SECONDS", 10, minimum=1)

# Redis pub/sub (config/channel_layer.py): each socket's messages wait in a queue of its own process (the
# list-based layer lost a group message for a whole process; tests/faults/test_channel_layer.py).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "config.channel_layer.PubSubChannelLayer",
        "CONFIG": {
            # No socket timeout: an idle websocket's subscription must not be dropped.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": 1000}],
        },
    }
}

# The sign-in limits, in Redis so that they hold across web processes; clear() deletes only the
# prefixed keys: the broker's queues live in the same database.
CACHES = {
    "default": {
        "BACKEND": "config.cache.SharedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "countersign:cache",
        # A sign-in must not hang on a Redis that does not answer (the limiter then fails open).
        "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
    }
}


# --- Auth, API -------------------------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    # guardian's ObjectPermissionBackend, answering approvals.review_agent as design.md names it
    "agents.backends.AgentObjectPermissionBackend",
]
# guardian.W001 looks for its backend by name; the subclass above is it.
SILENCED_SYSTEM_CHECKS = ["guardian.W001"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# The test suite's processes hash with MD5 (PBKDF2 costs about a second a user); never in production.
if env_bool("COUNTERSIGN_FAST_PASSWORD_HASHER", False):
    if not DEBUG:
        raise ImproperlyConfigured("COUNTERSIGN_FAST_PASSWORD_HASHER=1 is for the test suite: it needs DEBUG=1.")
    PASSWORD_HASHERS = [f"django.contrib.auth.hashers.{name}" for name in ("MD5PasswordHasher", "PBKDF2PasswordHasher")]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/inbox/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Failed sign-ins per client IP and per username in SIGNIN_WINDOW_SECONDS (sign-in page, admin and
# token API together); beyond, 429 until the window ends. config/throttle.py
SIGNIN_FAILURES_PER_WINDOW = env_int("SIGNIN_FAILURES_PER_MINUTE", 10, minimum=1)
SIGNIN_WINDOW_SECONDS = 60

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "config.serializers.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    # JSON only, through the one checked parser (config/parsing.py); other bodies get 415.
    "DEFAULT_PARSER_CLASSES": ["config.api.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_RATES": {"token": env_list("TOKEN_THROTTLE_RATE", "10/min")[0]},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Countersign API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}
# Largest JSON body accepted by the API (run input, edited arguments).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 256 * 1024, minimum=1024)
RUN_INPUT_MAX_BYTES = env_int("RUN_INPUT_MAX_BYTES", 64 * 1024, minimum=256)
# Deepest nesting of arrays and objects accepted in any JSON that comes in (config/parsing.py).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 64, minimum=8)

# GET /metrics: with a token, scrapers send "Authorization: Bearer <METRICS_TOKEN>"; without one,
# only loopback clients are answered.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

GUARDIAN_RAISE_403 = True
ANONYMOUS_USER_NAME = None


# --- LLM endpoint (OpenAI-compatible) --------------------------------------------------

LLM_BASE_URL = os.environ.get("LLM_BASE_URL", "http://127.0.0.1:11434/v1")
LLM_MODEL = os.environ.get("LLM_MODEL", "llama3.1")
LLM_API_KEY = os.environ.get("LLM_API_KEY", "")
LLM_TIMEOUT_SECONDS = env_int("LLM_TIMEOUT_SECONDS", 60, minimum=1)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 3, minimum=0)
LLM_RETRY_MAX_SECONDS = env_int("LLM_RETRY_MAX_SECONDS", 30, minimum=1)  # the longest wait, Retry-After included
LLM_PRICE_PER_1K_PROMPT = env_decimal("LLM_PRICE_PER_1K_PROMPT", "0")
LLM_PRICE_PER_1K_COMPLETION = env_decimal("LLM_PRICE_PER_1K_COMPLETION", "0")
# Per-model prices per 1K tokens over the shipped table (agents/pricing.py), as JSON.
LLM_PRICES = env_prices("LLM_PRICES")


# --- Runtime -------------------------------------------------------------------------

RUN_LEASE_SECONDS = env_int("RUN_LEASE_SECONDS", 120, minimum=1)
# A task hands its run back to the queue at the first step boundary after this many seconds,
# far from the task time limit; long runs go on in fresh tasks.
RUN_SLICE_SECONDS = env_int("RUN_SLICE_SECONDS", max(CELERY_TASK_SOFT_TIME_LIMIT // 2, 1), minimum=1)
# A queued run not picked up within this time is enqueued again (a lost doorbell).
RUN_REQUEUE_AFTER_SECONDS = env_int("RUN_REQUEUE_AFTER_SECONDS", 120, minimum=1)
TOOL_MAX_ATTEMPTS = env_int("TOOL_MAX_ATTEMPTS", 3, minimum=1)
TOOL_RETRY_BASE_SECONDS = float(os.environ.get("TOOL_RETRY_BASE_SECONDS", "0.2"))
# How long a process trusts what it read of an MCP tool (its risk, schemas) before reading it again.
MCP_TOOL_CACHE_SECONDS = float(os.environ.get("MCP_TOOL_CACHE_SECONDS", "2"))
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1)
# Escalation notices: over SMTP when EMAIL_HOST is set, else the console backend prints them.
MAILERS = {
    "default": {
        "BACKEND": os.environ.get("EMAIL_BACKEND")
        or f"django.core.mail.backends.{'smtp' if os.environ.get('EMAIL_HOST') else 'console'}.EmailBackend",
        "OPTIONS": {"host": os.environ.get("EMAIL_HOST", "localhost"), "port": env_int("EMAIL_PORT", 25, minimum=1)}
        if os.environ.get("EMAIL_HOST")
        else {},
    }
}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "countersign@localhost")


# --- Static files, i18n, logging ---------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Static files are served by WhiteNoise straight from the apps and static/ (no build step).
WHITENOISE_USE_FINDERS = True
STATICFILES_DIRS = [BASE_DIR / "static"]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Behind HTTPS: plain HTTP is redirected (not the probes /healthz and /metrics, which load balancers and
# scrapers send inside the network), and browsers are told to use HTTPS only for this long.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Every page: scripts and styles from this origin only (no inline script, style or handler), fetches
# and websockets to it (config.middleware adds the ws:/wss: origin of the host), never framed.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}


# --- Guardrails ----------------------------------------------------------------------------

SAFETY_FILTERS = env_list("SAFETY_FILTERS", "approvals.guardrails.KeywordSafetyFilter")
GUARDRAIL_BLOCK_PATTERNS = [
    r"\bignore (all )?previous instructions\b",
    r"BEGIN (RSA|OPENSSH) PRIVATE KEY",
]
GUARDRAIL_FLAG_PATTERNS = [r"\b(guarantee|lawsuit|legal action)\b"]
# Links in run input and tool arguments must point at these domains (empty: no check).
GUARDRAIL_ALLOWED_URL_DOMAINS = env_list("GUARDRAIL_ALLOWED_URL_DOMAINS", "example.com,countersign.local")
# Tool output and arguments outside these bounds are flagged for a person.
GUARDRAIL_NUMERIC_BOUNDS = {"issue_refund": {"amount": (0.01, 10_000)}}

# Oversight (approvals/analytics.py, approvals/advisor.py): a rubber stamp is SHARE of at least MIN_DECISIONS
# in WINDOW approved unchanged within SECONDS; the advisor weighs a tool's last ADVISOR_DECISIONS outcomes.
RUBBER_STAMP_SECONDS = env_int("RUBBER_STAMP_SECONDS", 5, minimum=1)
RUBBER_STAMP_SHARE = env_share("RUBBER_STAMP_SHARE", 0.8)
RUBBER_STAMP_MIN_DECISIONS = env_int("RUBBER_STAMP_MIN_DECISIONS", 20, minimum=1)
RUBBER_STAMP_WINDOW_SECONDS = env_int("RUBBER_STAMP_WINDOW_SECONDS", 7 * 24 * 3600, minimum=60)
ADVISOR_DECISIONS = env_int("ADVISOR_DECISIONS", 50, minimum=1)
ADVISOR_RAISE_UNCHANGED_SHARE = env_share("ADVISOR_RAISE_UNCHANGED_SHARE", 0.95)
ADVISOR_LOWER_SHARE = env_share("ADVISOR_LOWER_SHARE", 0.2)
ADVISOR_LOWER_MIN_DECISIONS = env_int("ADVISOR_LOWER_MIN_DECISIONS", 10, minimum=1)
# Canary rollout (agents/rollout.py, checked by the sweep): a candidate whose rejection rate over WINDOW exceeds
# FACTOR x the current version's, over at least MIN_DECISIONS of its decisions, is rolled back.
CANARY_WINDOW_SECONDS = env_int("CANARY_WINDOW_SECONDS", 24 * 3600, minimum=60)
CANARY_GUARD_MIN_DECISIONS = env_int("CANARY_GUARD_MIN_DECISIONS", 20, minimum=1)
CANARY_GUARD_REJECTION_FACTOR = env_decimal("CANARY_GUARD_REJECTION_FACTOR", "2")
