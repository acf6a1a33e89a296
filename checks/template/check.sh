#!/bin/sh
# A check to copy: replace the body of check() with yours. It runs in a check pod (or as a local
# process under `probity serve`), with KH_REPORTING_URL, KH_RUN_UUID and KH_CHECK_RUN_DEADLINE
# set by probity; `probity report` sends the verdict (retrying until the deadline) and exits
# non-zero only when the report itself could not be delivered.
set -u

# Settings come from the environment (the HealthCheck's env), with defaults.
: "${EXPECT_FILE:=/etc/hostname}"

# Prints nothing and returns 0 when all is well; prints the reason(s) and returns 1 when not.
check() {
  if [ ! -s "$EXPECT_FILE" ]; then
    echo "$EXPECT_FILE is missing or empty"
    return 1
  fi
}

if reason=$(check 2>&1); then
  exec probity report --ok
else
  exec probity report --error "${reason:-the check failed}"
fi
