#!/usr/bin/env bash
# mailgate's whole test suite: the one command of the README's quick start,
# and what .ci/run executes.
#
# On a fresh Debian machine with Go it first installs what the tests need
# (as root, through apt), then runs gofmt, go vet, staticcheck, the unit and
# end-to-end tests with -race, and a short run of every fuzz target.
#
# Environment:
#   CI=true             a test that needs a real component fails instead of skipping
#   FUZZTIME=10s        how long each fuzz target runs (0 to skip the fuzz smoke run)
#   SKIP_INSTALL=1      do not try to install packages
set -euo pipefail
cd "$(dirname "$0")"

FUZZTIME=${FUZZTIME:-10s}
STATICCHECK_VERSION=v0.8.2

say() { printf '\n=== %s\n' "$*"; }

# --- Debian packages the tests use -------------------------------------------
# postfix, postfix-pcre: postmap -q, the reference for pcre_table semantics;
#   smtp-sink, a real SMTP server for the outbound client's tests.
# dovecot-core: doveadm pw / auth test verify the password hashes we write.
# swaks (+ the Perl TLS modules it needs for STARTTLS and implicit TLS):
#   the client of the `mailgate serve` end-to-end tests.
# openssl: the certificate of the throwaway Postfix (test/postfix/instance.sh).
# slapd, ldap-utils: the throwaway OpenLDAP of the LDAP source's tests
#   (test/ldap/instance.sh); preseeded not to create a system directory.
# postgresql: initdb/pg_ctl for the throwaway clusters of the PostgreSQL
#   source's tests (test/pg/instance.sh).
PATH=$PATH:/usr/sbin:/sbin
need_pkgs=()
{ command -v postmap && command -v smtp-sink; } >/dev/null 2>&1 || need_pkgs+=(postfix)
command -v swaks >/dev/null 2>&1 || need_pkgs+=(swaks)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need_pkgs+=(libnet-ssleay-perl)
perl -MIO::Socket::SSL -e1 >/dev/null 2>&1 || need_pkgs+=(libio-socket-ssl-perl)
command -v doveadm >/dev/null 2>&1 || need_pkgs+=(dovecot-core)
{ command -v slapd && command -v slappasswd; } >/dev/null 2>&1 || need_pkgs+=(slapd)
{ command -v ldapadd && command -v ldapsearch; } >/dev/null 2>&1 || need_pkgs+=(ldap-utils)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_pkgs+=(postgresql)
fi
# (postconf -m needs a main.cf, which a "No configuration" Postfix lacks: ask dpkg.)
if ! dpkg -s postfix-pcre >/dev/null 2>&1; then
  need_pkgs+=(postfix-pcre)
fi
if [ ${#need_pkgs[@]} -gt 0 ] && [ "${SKIP_INSTALL:-}" != 1 ]; then
  say "installing ${need_pkgs[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: ${need_pkgs[*]} missing and not root: install them or run as root" >&2
    exit 1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt-get update -q -o DPkg::Lock::Timeout=300
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${need_pkgs[@]}"
fi

# --- static checks -------------------------------------------------------------
say "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi

say "go vet"
go vet ./...

say "staticcheck"
SC=$(go env GOPATH)/bin/staticcheck
if ! [ -x "$SC" ]; then
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
"$SC" ./...

# --- tests -----------------------------------------------------------------------
say "go test -race"
go test -race -count=1 -timeout 30m ./...

# --- fuzz smoke run ----------------------------------------------------------------
if [ "$FUZZTIME" != 0 ]; then
  for pkg in $(go list ./...); do
    dir=$(go list -f '{{.Dir}}' "$pkg")
    for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
      say "fuzz $pkg $target ($FUZZTIME)"
      out=$(mktemp)
      if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" 2>&1 | tee "$out"; then
        # Go's fuzzer can stop with "context deadline exceeded" when its time
        # runs out while it is still gathering baseline coverage, without any
        # failing input: run that target once more. A real failure writes
        # its input to testdata/fuzz and fails here.
        if grep -q "context deadline exceeded" "$out" && ! grep -q "Failing input written" "$out"; then
          say "fuzz $pkg $target: fuzzer time-out without a failing input, once more"
          go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg"
        else
          rm -f "$out"
          exit 1
        fi
      fi
      rm -f "$out"
    done
  done
fi

say "all tests passed"
