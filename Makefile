# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Both bootstrap uv (into .prepay/tools if it is not on PATH) and the project's venv.
# uv never downloads a Python here: it uses the machine's Python 3.11+.
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .prepay/tools/bin/uv
endif

.PHONY: demo test lint setup check clean i18n browser-deps

$(UV):
	python3 -m venv .prepay/tools
	.prepay/tools/bin/pip install --quiet uv

# --compile-bytecode: dependencies get their .pyc at install time, as on a gateway whose
# read-only install (systemd ProtectSystem=strict) could never cache them itself.
setup: $(UV)
	$(UV) sync --frozen --quiet --compile-bytecode

demo: setup
	$(UV) run --frozen prepay demo

# The browser tests drive Debian's Chromium; receipts need the CJK font and pdftotext.
# Installed when missing (as root, with apt-get); otherwise those tests say what to install.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v pdftotext >/dev/null || ! fc-list | grep -q "Noto Sans CJK"; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q chromium fonts-noto-cjk poppler-utils >/dev/null || \
	    (apt-get update -q >/dev/null && apt-get install -y -q chromium fonts-noto-cjk poppler-utils >/dev/null); \
	  else echo "browser tests need: apt-get install -y chromium fonts-noto-cjk poppler-utils"; fi; \
	fi

test: setup browser-deps
	$(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

check: setup
	$(UV) run --frozen prepay check

clean:
	rm -rf .prepay/demo .prepay/test-pg

# The console's messages: extract every string (Python and templates) and merge the new
# ones into the catalogues; translate the empty msgstr in the zh_CN .po by hand. The same
# for the notification templates (domain "notifications", notifications/locale). The .po
# is compiled in memory when the console starts (cloud/console/i18n.py).
i18n: setup
	$(UV) run --frozen pybabel extract -F babel.cfg -k _ -k N_ --no-location --sort-output -o .prepay/messages.pot .
	$(UV) run --frozen pybabel update -i .prepay/messages.pot -d cloud/console/locale -l zh_CN --no-fuzzy-matching -w 100
	$(UV) run --frozen pybabel extract -k N_ --no-location --sort-output -o .prepay/notifications.pot notifications/templates.py
	$(UV) run --frozen pybabel update -D notifications -i .prepay/notifications.pot -d notifications/locale -l zh_CN --no-fuzzy-matching -w 100
