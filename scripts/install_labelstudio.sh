#!/usr/bin/env bash
# Install Label Studio into its own virtual environment for the `labelstudio` tests.
#
# Label Studio pins its own Django, numpy and pydantic stack, so it must not share boxmask's
# venv. Idempotent: a venv that already runs the wanted version is left alone.
#   scripts/install_labelstudio.sh [VENV_DIR]   (default: .venv-labelstudio beside this repo)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${BOXMASK_LABELSTUDIO_VENV:-.venv-labelstudio}}"
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
PYTHON="${PYTHON:-python3}"
# Label Studio 1.23.2 asks for sentry-sdk >= 2.16 without an upper bound, and its settings pass
# `send_default_pii`, which sentry-sdk 3.0 (2026-12) rejects: Django's settings then fail to
# import. Held below 3 until a Label Studio release supports it.
PINS=("sentry-sdk>=2.16,<3")

installed_version() {
  "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('label-studio'))" 2>/dev/null || true
}

if [ -x "$VENV/bin/label-studio" ] && [ "$(installed_version)" = "$VERSION" ]; then
  echo "label-studio $VERSION already installed in $VENV"
  # A venv made before a pin: bring its packages within the pins (a no-op when they are).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
else
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "label-studio==$VERSION" \
    "${PINS[@]}"
  echo "label-studio $(installed_version) installed in $VENV"
  rm -rf "$VENV/template-data"
fi

# A migrated, empty data dir: tests copy it instead of migrating a fresh database on every
# start (minutes on a busy 2-core machine, seconds to copy).
TEMPLATE="$VENV/template-data"
if [ ! -f "$TEMPLATE/.migrated" ]; then
  rm -rf "$TEMPLATE" && mkdir -p "$TEMPLATE"
  MANAGE="$("$VENV/bin/python" -c "import label_studio, os; print(os.path.join(os.path.dirname(label_studio.__file__), 'manage.py'))")"
  LABEL_STUDIO_BASE_DATA_DIR="$TEMPLATE" "$VENV/bin/python" "$MANAGE" migrate --no-color -v 0
  touch "$TEMPLATE/.migrated"
  echo "migrated template data dir in $TEMPLATE"
fi
