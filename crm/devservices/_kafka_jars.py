"""Fetch the Kafka broker's jars from Maven Central into a per-user cache, once.

Layout: ``<cache>/kafka-<version>/libs/*.jar`` plus ``<cache>/kafka-<version>/.complete``.
A fetch runs in a hidden temp dir next to the target and is renamed into place only
after Maven succeeded and the marker was written, so an interrupted fetch never looks
complete. An unmarked target left by other means is adopted if it holds exactly the
fetched jars, else replaced (never while a process runs from it). Concurrent fetches
of one version are serialised with a lock file.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from crm.devservices._proc import file_lock, log_tail, pids_mentioning
from crm.devservices.errors import DevServiceError

KAFKA_VERSION = "4.1.1"
"""The pinned Apache Kafka broker version the dev tooling runs."""

SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
MARKER = ".complete"
INSTALL_HINT = "install a JDK (17+) and Maven, e.g. `apt-get install maven default-jre-headless`"

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>loopcrm</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{plugin}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""


def default_cache_dir() -> Path:
    """``$CRM_CACHE_DIR`` if set, else ``~/.cache/loopcrm``."""
    env = os.environ.get("CRM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "loopcrm"


def find_java() -> str:
    """Path of the ``java`` launcher (``$JAVA_HOME/bin/java`` first, then ``PATH``).

    Raises DevServiceError saying what to install if there is none.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    java = shutil.which("java")
    if java is None:
        raise DevServiceError(f"`java` was not found (needed to run Kafka): {INSTALL_HINT}")
    return java


def find_mvn() -> str:
    """Path of ``mvn``; raises DevServiceError saying what to install if missing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevServiceError(f"`mvn` was not found (needed to fetch Kafka's jars): {INSTALL_HINT}")
    return mvn


def kafka_jars_ready(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> bool:
    """True if a complete jar set for ``version`` is already cached (no fetch needed)."""
    cache = (cache_dir or default_cache_dir()).expanduser()
    return (cache / f"kafka-{version}" / MARKER).is_file()


def ensure_kafka_jars(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Return the ``libs`` dir holding every runtime jar of Kafka ``version``.

    Fetches with Maven (``dependency:copy-dependencies``) the first time, which needs
    ``mvn``, ``java`` and access to Maven Central (or the mirror in ~/.m2/settings.xml).
    ``cache_dir`` defaults to ``$CRM_CACHE_DIR`` or ``~/.cache/loopcrm``. Safe to call
    from several processes at once. Raises DevServiceError on any failure.
    """
    cache = (cache_dir or default_cache_dir()).expanduser().resolve()
    target = cache / f"kafka-{version}"
    if (target / MARKER).is_file():
        return target / "libs"
    find_java()
    mvn = find_mvn()
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / f".kafka-{version}.lock"):
        if (target / MARKER).is_file():  # another process finished while we waited
            return target / "libs"
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".kafka-{version}.fetch-"))
        try:
            staging.chmod(0o755)
            _fetch(mvn, version, staging)
            if target.exists() and _same_jars(staging / "libs", target / "libs"):
                os.rename(staging / MARKER, target / MARKER)  # adopt an identical leftover
                shutil.rmtree(staging)
            else:
                _discard_incomplete(target)
                os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target / "libs"


def _same_jars(fresh: Path, existing: Path) -> bool:
    """True if ``existing`` holds exactly the jars of ``fresh``, byte for byte."""
    names = sorted(p.name for p in fresh.glob("*.jar"))
    if not existing.is_dir() or names != sorted(p.name for p in existing.glob("*.jar")):
        return False
    return all(filecmp.cmp(fresh / name, existing / name, shallow=False) for name in names)


def _fetch(mvn: str, version: str, workdir: Path) -> None:
    """Run Maven in ``workdir`` and write the completion marker (still in ``workdir``)."""
    pom = _POM.format(
        scala=SCALA_VERSION, kafka=version, log4j=LOG4J_VERSION, plugin=DEPENDENCY_PLUGIN_VERSION
    )
    (workdir / "pom.xml").write_text(pom)
    log = workdir / "mvn.log"
    command = [
        mvn,
        "-B",
        "-q",
        "dependency:copy-dependencies",
        "-DoutputDirectory=libs",
        "-DincludeScope=runtime",
    ]
    try:
        with open(log, "wb") as out:
            result = subprocess.run(
                command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, timeout=1800
            )
    except subprocess.TimeoutExpired as exc:
        raise DevServiceError(f"Maven did not finish fetching Kafka {version} in 30 min") from exc
    main_jar = workdir / "libs" / f"kafka_{SCALA_VERSION}-{version}.jar"
    if result.returncode != 0 or not main_jar.is_file():
        raise DevServiceError(
            f"Maven could not fetch Kafka {version} (exit {result.returncode}); it needs "
            f"access to Maven Central or a mirror in ~/.m2/settings.xml. Maven said:\n"
            f"{log_tail(log, 30)}"
        )
    jars = sorted(p.name for p in (workdir / "libs").glob("*.jar"))
    marker = {"version": version, "jars": jars, "fetched_at": time.time()}
    (workdir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _discard_incomplete(target: Path) -> None:
    """Move an unmarked, outdated leftover ``target`` aside and delete it.

    Refuses while a process runs from it: a JVM still loads classes and native
    libraries from its jars, so deleting them under it breaks it.
    """
    if not target.exists():
        return
    users = pids_mentioning(str(target))
    if users:
        raise DevServiceError(
            f"{target} is incomplete (no {MARKER}) and differs from a fresh fetch, but "
            f"process(es) {', '.join(map(str, users))} run from it; stop them, then retry"
        )
    graveyard = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale-"))
    os.rename(target, graveyard / target.name)
    shutil.rmtree(graveyard, ignore_errors=True)
