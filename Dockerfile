# The Airlock worker. Every replica must run this same image: a run pins its policy by content
# hash, and replaying a history needs the workflow code that wrote it.
FROM python:3.11-slim

# PYTHONDONTWRITEBYTECODE=1: at run time the code is read-only (root-owned, the worker runs as
# 10001), so the worker must not try to write bytecode; the build compiles it instead (below).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed numeric id, so orchestrators that demand runAsNonRoot can check it without /etc/passwd.
RUN groupadd --system --gid 10001 airlock \
 && useradd --system --uid 10001 --gid airlock --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin airlock

WORKDIR /app

# Dependencies first, read from pyproject.toml itself, so that a code change does not reinstall
# temporalio, openai and the rest.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
# The install also provides the `airlock` console script. The in-tree build leaves build/ and
# *.egg-info behind; they are not needed at run time.
# The workflow sandbox imports the workflow modules afresh for every workflow it starts, and the
# flight recorder imports them for every history it replays; without cached bytecode each import
# compiles them from source (the Makefile's `bytecode` target says what that costs). So the
# bytecode is compiled here, as root, once: for /app, which `python worker.py` imports from, and
# for the installed packages, which the `airlock` command imports from (compileall skips what
# pip has already compiled).
# .airlock/ is where the SQLite default lives, so the image still starts without AIRLOCK_DB (a
# single worker; a cluster must share PostgreSQL).
RUN pip install ".[postgres]" \
 && rm -rf build ./*.egg-info \
 && python -m compileall -q /app "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && mkdir -p .airlock \
 && chown airlock:airlock .airlock

USER 10001:10001

# Exec form: the worker itself receives SIGTERM and can drain instead of being killed.
CMD ["python", "worker.py"]
