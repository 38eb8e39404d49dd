"""Texts of the stand-in pack and kit: startup script, log4j2.properties, READMEs, placeholders.

Kept apart from build.py so the builder reads as logic. Every text says it is a
stand-in; the console-facing strings of the startup script are the product's
(shared/wso2/console-reference.md §2).
"""

from __future__ import annotations

LOG4J2 = """\
# STAND-IN pack (apim-upgrade sandbox): a short log4j2.properties with the product's patterns.
appenders = CARBON_CONSOLE, CARBON_LOGFILE

appender.CARBON_CONSOLE.type = Console
appender.CARBON_CONSOLE.name = CARBON_CONSOLE
appender.CARBON_CONSOLE.layout.type = PatternLayout
appender.CARBON_CONSOLE.layout.pattern = [%d{DEFAULT}] %5p - %c{1} %m%n

appender.CARBON_LOGFILE.type = RollingFile
appender.CARBON_LOGFILE.name = CARBON_LOGFILE
appender.CARBON_LOGFILE.fileName = ${sys:carbon.home}/repository/logs/wso2carbon.log
appender.CARBON_LOGFILE.filePattern = ${sys:carbon.home}/repository/logs/wso2carbon-%d{MM-dd-yyyy}.%i.log
appender.CARBON_LOGFILE.layout.type = PatternLayout
appender.CARBON_LOGFILE.layout.pattern = TID: [%tenantId] [%appName] [%d] %5p {%c} - %m%ex%n

loggers = org-wso2, org-wso2-carbon

logger.org-wso2.name = org.wso2
logger.org-wso2.level = INFO

logger.org-wso2-carbon.name = org.wso2.carbon
logger.org-wso2-carbon.level = INFO

rootLogger.level = ERROR
rootLogger.appenderRef.CARBON_CONSOLE.ref = CARBON_CONSOLE
rootLogger.appenderRef.CARBON_LOGFILE.ref = CARBON_LOGFILE
"""

JDK_CHECK = """\
# Same check as the product's script: read the JDK version (release file, else java -version).
java_version=$(sed -n 's/^JAVA_VERSION="\\(.*\\)"/\\1/p' "$JAVA_HOME/release" 2>/dev/null)
[ -z "$java_version" ] && java_version=$("$JAVACMD" -version 2>&1 | awk -F '"' '/version/ {print $2}')
java_version_formatted=$(echo "$java_version" | awk -F. '{printf("%02d%02d",$1,$2);}')
if [ "$java_version_formatted" -lt @LOW_NUM@ ] || [ "$java_version_formatted" -gt @HIGH_NUM@ ]; then
   echo " Starting WSO2 Carbon (in unsupported JDK)"
   echo " [ERROR] CARBON is supported only between JDK @LOW@ and JDK @HIGH@"
fi
"""

STARTUP_SCRIPT = """\
#!/usr/bin/env bash
# ----------------------------------------------------------------------------
# STAND-IN for the WSO2 API Manager @VERSION@ startup script, built by apim-upgrade's
# sandbox (sandbox/distribution/build.py). This is NOT the WSO2 product: it checks
# the environment and echoes like the product's bin/api-manager.sh, then runs the
# Python stand-in server in place of the JVM. See ../README-STANDIN.md.
#
# Usage: api-manager.sh [start|stop|restart|version] [-Dname[=value] ...]
# ----------------------------------------------------------------------------

# resolve links - $0 may be a softlink
PRG="$0"
while [ -h "$PRG" ]; do
  ls=$(ls -ld "$PRG")
  link=$(expr "$ls" : '.*-> \\(.*\\)$')
  if expr "$link" : '.*/.*' > /dev/null; then
    PRG="$link"
  else
    PRG=$(dirname "$PRG")/"$link"
  fi
done

# Get standard environment variables
PRGDIR=$(dirname "$PRG")

# Only set CARBON_HOME if not already set
[ -z "$CARBON_HOME" ] && CARBON_HOME=$(cd "$PRGDIR/.." || exit 1; pwd)

if [ -z "$JAVACMD" ] ; then
  if [ -n "$JAVA_HOME"  ] ; then
    if [ -x "$JAVA_HOME/jre/sh/java" ] ; then
      # IBM's JDK on AIX uses strange locations for the executables
      JAVACMD="$JAVA_HOME/jre/sh/java"
    else
      JAVACMD="$JAVA_HOME/bin/java"
    fi
  else
    JAVACMD=java
  fi
fi

if [ ! -x "$JAVACMD" ] ; then
  echo "Error: JAVA_HOME is not defined correctly."
  echo " CARBON cannot execute $JAVACMD"
  exit 1
fi

# if JAVA_HOME is not set we're not happy
if [ -z "$JAVA_HOME" ]; then
  echo "You must set the JAVA_HOME variable before running CARBON."
  exit 1
fi

CMD=""
args=()
for c in "$@"; do
  case "$c" in
    start|--start|-start) CMD="start" ;;
    stop|--stop|-stop) CMD="stop" ;;
    restart|--restart|-restart) CMD="restart" ;;
    version|--version|-version) CMD="version" ;;
    *) args+=("$c") ;;
  esac
done

for c in "${args[@]}"; do
  case "$c" in
    -Dprofile=*) echo "Starting the server..." ;;
  esac
done

PID_FILE="$CARBON_HOME/wso2carbon.pid"
# Stand-in addition: the product sends a background server's output to /dev/null; the
# stand-in keeps it (banner echoes, JUL shutdown lines, crash banners) for debugging.
STDOUT_FILE="$CARBON_HOME/repository/logs/wso2carbon-stdout.log"

# The pid in wso2carbon.pid, if it is a live server of THIS home. Stand-in addition: the
# product signals whatever pid the file holds; a stale file whose pid now belongs to
# another process must never be signalled (nor make "start" believe it is running).
server_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    # Zombies have an empty cmdline; the server (--carbon-home H) or this script before
    # its exec (H/bin/api-manager.sh) name the home as one whole argument.
    tr '\0' '\n' < "/proc/$pid/cmdline" \
      | grep -qxF -e "$CARBON_HOME" -e "$CARBON_HOME/bin/api-manager.sh" || return 1
  fi
  echo "$pid"
}

launch_server() {
  export CARBON_HOME
  mkdir -p "$CARBON_HOME/repository/logs"
  # nohup as the product does; setsid (stand-in addition) gives the server its own session,
  # so the caller's process group can exit or be killed without taking the server with it.
  nohup setsid bash "$CARBON_HOME/bin/api-manager.sh" "${args[@]}" >> "$STDOUT_FILE" 2>&1 < /dev/null &
  # setsid does not fork here (a background job is no group leader) and nohup, setsid and
  # the script all exec, so $! is the server's pid; the server's script writes it again.
  echo $! > "$PID_FILE"
}

if [ "$CMD" = "version" ]; then
  cat "$CARBON_HOME/bin/version.txt"
  exit 0
elif [ "$CMD" = "start" ]; then
  if server_pid > /dev/null; then
    echo "Process is already running"
    exit 0
  fi
  launch_server
  exit 0
elif [ "$CMD" = "stop" ]; then
  if pid=$(server_pid); then
    kill -term "$pid"
  else
    echo "No server of $CARBON_HOME is running (wso2carbon.pid names no live server)"
  fi
  exit 0
elif [ "$CMD" = "restart" ]; then
  if pid=$(server_pid); then
    kill -term "$pid"
    while kill -0 "$pid" 2>/dev/null && server_pid > /dev/null; do
      sleep 0.2
    done
  fi
  launch_server
  exit 0
fi

@JDK_CHECK@
JVM_MEM_OPTS="${JVM_MEM_OPTS:--Xms256m -Xmx1024m}"

echo "JAVA_HOME environment variable is set to $JAVA_HOME"
echo "CARBON_HOME environment variable is set to $CARBON_HOME"

cd "$CARBON_HOME" || exit 1
mkdir -p "$CARBON_HOME/tmp" "$CARBON_HOME/repository/logs"

echo "Using Java memory options: $JVM_MEM_OPTS"

# The server replaces this shell (exec), so the pid below is the server's and the
# whole server is one process: killing it (or its process group) ends everything.
echo $$ > "$CARBON_HOME/wso2carbon.pid"
export CARBON_HOME JAVA_HOME
export PYTHONPATH=@PROJECT_ROOT@${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
exec @PYTHON@ -m sandbox.distribution.server --carbon-home "$CARBON_HOME" "${args[@]}"
"""

IDENTITY_CONFIG = """\
# STAND-IN identity migration configuration (apim-upgrade sandbox): the keys the
# stand-in IS migration client reads, with the values WSO2 support hands out.
migrationEnable: "true"
currentVersion: "5.11.0"
migrateVersion: "6.1.0"
continueOnError: "false"
batchUpdate: "true"
ignoreForInactiveTenants: "false"
"""

API_RESOURCES = {
    "README-STANDIN.md": (
        "# Stand-in API-M migration client resources (apim-upgrade sandbox)\n\n"
        "Placeholders at the paths the 4.x client reads. The stand-in client derives its\n"
        "schema changes from the pack's own dbscripts/ (a diff), not from these files.\n"
    ),
    "pre-migration-scripts/migration-4.0.0_to_4.1.0/postgresql.sql": (
        "-- STAND-IN placeholder for the AM_DB 4.0.0 -> 4.1.0 pre-migration script.\n"
    ),
    "post-migration-scripts/migration-4.0.0_to_4.1.0/am_db/postgresql.sql": (
        "-- STAND-IN placeholder for the AM_DB 4.0.0 -> 4.1.0 post-migration script.\n"
    ),
    "post-migration-scripts/common/reg_db/reg-index.sql": (
        "-- STAND-IN placeholder for the REG_LOG clean-up run by the artifact re-indexing step.\n"
    ),
    "rxts/api.rxt": (
        '<!-- STAND-IN placeholder for the 4.2.0 api.rxt -->\n<artifactType type="application/vnd.wso2-api+xml"/>\n'
    ),
}


def kit_readme(jdbc_jar: str, identity_jar: str, api_jar: str) -> str:
    return f"""\
# Stand-in WSO2 migration kit (apim-upgrade sandbox)

NOT WSO2 software. Stand-ins for what WSO2 support hands out for a 4.0.0 -> 4.2.0
migration, laid out as the upgrade guide uses them:

- `{jdbc_jar}`: placeholder jar naming the PostgreSQL JDBC Driver (no driver code)
- `migration-resources/` + `{identity_jar}`: identity (IS) migration client
- `migration-resources-am/migration-resources/` + `migration-resources-am/dropins/{api_jar}`:
  API-M migration client
- `keystore/`: client-truststore.jks, internal-keystore.jks, tls-keystore.jks (JKS; aliases
  serverCert / encryptkey; store and key password: MigrationKit.store_password, random per
  build and never written to disk)
"""


def pack_readme(version: str, apimgt: str, kernel: str) -> str:
    return f"""\
# STAND-IN WSO2 API Manager {version}

This is **not** the WSO2 product. The real distribution cannot be downloaded where
apim-upgrade is developed, so its sandbox builds this stand-in with the real
layout, the product's configuration keys, console strings and log formats, and
the real carbon-apimgt {apimgt} / carbon-kernel {kernel} version numbers in its
plugin jar names. `bin/api-manager.sh` runs a Python program
(`sandbox.distribution.server`) instead of the JVM. The jars are placeholders.

What it does: reads repository/conf/deployment.toml, checks keystores and the
JDBC driver, connects to the PostgreSQL databases, runs the stand-in identity
and API-M migration clients (`-Dmigrate ...`), pre-migration validation
(`-DrunPreMigration`), and serves `GET /health` and
`GET /api/am/publisher/v4/apis` on 127.0.0.1:9763+offset in a normal start.
Schema changes come from this pack's own dbscripts/.

Failure injection for tests: APIM_STANDIN_FAIL, APIM_STANDIN_FAIL_STEP,
APIM_STANDIN_SPEED, APIM_STANDIN_HTTP_PORT (see the project's
sandbox/distribution/README.md).
"""
