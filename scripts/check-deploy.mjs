// Static checks of the deployment files that need a YAML parser, called by
// scripts/check-deploy.sh: the compose models as Debian's docker-compose merged them
// (paths given as arguments), the Dockerfiles and .dockerignore against each other,
// and every manifest under deploy/k8s. No Docker engine and no cluster are needed.
//
//   node scripts/check-deploy.mjs GPU.yml BASE.yml CPU.yml
//
// Prints one line per failed check and exits 1 when any failed.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";

const PORT = 50051;
const failures = [];
let checks = 0;
function check(ok, what) {
  checks += 1;
  if (!ok) failures.push(what);
  return ok;
}

// ---- Dockerfiles: instructions with continuation lines joined, comments dropped.
function instructions(file) {
  const joined = readFileSync(file, "utf8").replace(/\\\r?\n/g, " ");
  return joined
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      const [op, ...rest] = line.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}
const all = (ins, op) => ins.filter((i) => i.op === op).map((i) => i.args);
// FROM lines with ${NAME} resolved to the defaults of the ARGs before them (the base
// images the Dockerfiles build on unless --build-arg names another).
const froms = (ins) => {
  const args = new Map();
  const out = [];
  for (const i of ins) {
    const arg = /^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$/.exec(i.op === "ARG" ? i.args : "");
    if (arg) args.set(arg[1], arg[2]);
    if (i.op === "FROM")
      out.push(i.args.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (m, n) => args.get(n) ?? m));
  }
  return out;
};
const last = (ins, op) => all(ins, op).at(-1) ?? "";
const execForm = (args) => {
  try {
    return JSON.parse(args);
  } catch {
    return args.split(/\s+/);
  }
};

const inference = instructions("Dockerfile.inference");
const orchestrator = instructions("Dockerfile.orchestrator");

const base = froms(inference)[0] ?? "";
check(
  /^pytorch\/pytorch:[^:@\s]*cuda[^:@\s]*$/.test(base) && !base.endsWith(":latest"),
  `Dockerfile.inference: FROM should be a pytorch/pytorch CUDA image pinned by tag, got "${base}"`,
);
const inferenceUser = last(inference, "USER").split(":")[0];
check(
  /^\d+$/.test(inferenceUser) && inferenceUser !== "0",
  `Dockerfile.inference: USER should be a numeric non-root uid (Kubernetes runAsNonRoot), got "${inferenceUser}"`,
);
check(
  all(inference, "EXPOSE").some((a) => a.split(/\s+/).includes(String(PORT))),
  `Dockerfile.inference: EXPOSE ${PORT} missing`,
);
const env = all(inference, "ENV").join(" ");
const hfHome = /(?:^|\s)HF_HOME=(\S+)/.exec(env)?.[1];
const volumes = all(inference, "VOLUME").flatMap(execForm);
check(
  hfHome !== undefined && volumes.includes(hfHome),
  `Dockerfile.inference: HF_HOME (${hfHome}) should be a VOLUME`,
);
check(volumes.includes("/models"), "Dockerfile.inference: /models should be a VOLUME");
check(
  /(?:^|\s)EMBED_MODEL_DIR=\/models(?:\s|$)/.test(env),
  "Dockerfile.inference: ENV EMBED_MODEL_DIR=/models missing",
);
check(
  !/HF_HUB_OFFLINE=/.test(env),
  "Dockerfile.inference: HF_HUB_OFFLINE must stay unset by default",
);
const serverCmd = [
  ...execForm(last(inference, "ENTRYPOINT")),
  ...execForm(last(inference, "CMD")),
].join(" ");
check(
  /^embed-inference-server .*--host 0\.0\.0\.0 --port 50051/.test(serverCmd),
  `Dockerfile.inference: should run embed-inference-server --host 0.0.0.0 --port ${PORT}, runs "${serverCmd}"`,
);
const healthcheck = last(inference, "HEALTHCHECK");
const probePath = /(\/\S+healthcheck\.py)/.exec(healthcheck)?.[1];
check(
  probePath !== undefined &&
    last(inference, "WORKDIR") === "/opt/embed" &&
    probePath === "/opt/embed/deploy/healthcheck.py" &&
    all(inference, "COPY").some((a) => a.startsWith("deploy/healthcheck.py ")),
  "Dockerfile.inference: HEALTHCHECK should run /opt/embed/deploy/healthcheck.py, copied from deploy/healthcheck.py",
);

check(
  froms(orchestrator).every((f) => f.startsWith("node:20-bookworm-slim")),
  "Dockerfile.orchestrator: every stage should be FROM node:20-bookworm-slim",
);
check(
  all(orchestrator, "RUN").some((r) => /\bnpm ci\b/.test(r)) &&
    all(orchestrator, "RUN").some((r) => /\bnpx\b.*\btsc\b/.test(r)),
  "Dockerfile.orchestrator: should RUN npm ci and npx tsc",
);
check(
  execForm(last(orchestrator, "ENTRYPOINT")).some((a) => a.endsWith("bin/embed-multi.js")),
  "Dockerfile.orchestrator: ENTRYPOINT should be bin/embed-multi.js",
);
const orchestratorUser = last(orchestrator, "USER").split(":")[0];
check(
  orchestratorUser !== "" && orchestratorUser !== "root" && orchestratorUser !== "0",
  "Dockerfile.orchestrator: the final stage should run as a non-root USER",
);
const orchestratorWorkdir = last(orchestrator, "WORKDIR");

// ---- .dockerignore: the local state stays out, and nothing a Dockerfile copies is cut.
const ignored = readFileSync(".dockerignore", "utf8")
  .split(/\r?\n/)
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#") && !l.startsWith("!"));
for (const must of [".git", ".venv", "models", "dist", "out"]) {
  check(ignored.includes(must), `.dockerignore: "${must}" should be excluded`);
}
check(
  ignored.includes("node_modules") || ignored.includes("**/node_modules"),
  '.dockerignore: "node_modules" should be excluded',
);
function isIgnored(path) {
  const segments = path.replace(/\/$/, "").split("/");
  return ignored.some((pattern) => {
    if (pattern.startsWith("**/")) return segments.includes(pattern.slice(3));
    const p = pattern.replace(/\/$/, "");
    return path === p || path.startsWith(`${p}/`);
  });
}
for (const [file, ins] of [
  ["Dockerfile.inference", inference],
  ["Dockerfile.orchestrator", orchestrator],
]) {
  for (const copy of all(ins, "COPY")) {
    if (copy.startsWith("--from=")) continue;
    const parts = copy.split(/\s+/).filter((p) => !p.startsWith("--"));
    for (const source of parts.slice(0, -1)) {
      const path = source.replace(/\/$/, "");
      check(existsSync(path), `${file}: COPY source ${source} does not exist`);
      check(!isIgnored(path), `${file}: COPY source ${source} is excluded by .dockerignore`);
    }
  }
}

// ---- compose: the models docker-compose rendered (gpu = what `docker compose up` reads).
const [gpuFile, baseFile, cpuFile] = process.argv.slice(2);
const rendered = { gpu: gpuFile, base: baseFile, cpu: cpuFile };
const gpuDevices = (svc) =>
  (svc?.deploy?.resources?.reservations?.devices ?? []).filter(
    (d) => d.driver === "nvidia" || (d.capabilities ?? []).includes("gpu"),
  );
const argAfter = (args, flag) => {
  const i = (args ?? []).indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};
const volumeTargets = (svc) =>
  (svc?.volumes ?? []).map((v) => {
    if (typeof v !== "string") return { target: v.target, readOnly: v.read_only === true };
    const [, target, mode] = v.split(":");
    return { target, readOnly: mode === "ro" };
  });
for (const [variant, file] of Object.entries(rendered)) {
  if (!check(file && existsSync(file), `compose (${variant}): no rendered config given`)) continue;
  const model = parse(readFileSync(file, "utf8"));
  const inf = model?.services?.inference;
  const orc = model?.services?.orchestrator;
  const where = `compose (${variant})`;
  if (!check(inf && orc, `${where}: services inference and orchestrator expected`)) continue;
  check(
    inf.build?.dockerfile === "Dockerfile.inference",
    `${where}: inference builds Dockerfile.inference`,
  );
  check(
    orc.build?.dockerfile === "Dockerfile.orchestrator",
    `${where}: orchestrator builds Dockerfile.orchestrator`,
  );
  check(
    orc.depends_on?.inference?.condition === "service_healthy",
    `${where}: orchestrator should depend on inference with condition service_healthy`,
  );
  check(
    (inf.healthcheck?.test ?? []).includes(probePath),
    `${where}: inference healthcheck should run ${probePath}`,
  );
  for (const port of inf.ports ?? []) {
    // "50051" or "50051:50051" publish on every host interface: only 127.0.0.1 may be named.
    const parts = typeof port === "string" ? port.split(":") : [];
    const hostIp = typeof port === "string" ? (parts.length === 3 ? parts[0] : "") : port.host_ip;
    check(
      hostIp === "127.0.0.1",
      `${where}: inference port ${JSON.stringify(port)} is published beyond 127.0.0.1`,
    );
  }
  const infTargets = volumeTargets(inf).map((v) => v.target);
  check(
    infTargets.includes("/models") && infTargets.includes(hfHome),
    `${where}: inference should mount volumes on /models and ${hfHome}`,
  );
  const cmd = orc.command ?? [];
  check(
    argAfter(cmd, "--servers") === `inference:${PORT}`,
    `${where}: orchestrator should use --servers inference:${PORT}`,
  );
  check(
    argAfter(cmd, "--models") === "all-MiniLM-L6-v2" &&
      String(argAfter(cmd, "--output_dir")).startsWith("/out/"),
    `${where}: orchestrator should embed with all-MiniLM-L6-v2 into /out/...`,
  );
  const input = String(argAfter(cmd, "--input_file"));
  const inputAbs = input.startsWith("/") ? input : `${orchestratorWorkdir}/${input}`;
  const orcVolumes = volumeTargets(orc);
  check(
    orcVolumes.some((v) => v.readOnly && inputAbs.startsWith(`${v.target}/`)) &&
      input.endsWith("examples/paragraphs.jsonl"),
    `${where}: --input_file ${input} should lie in a read-only mount of ./examples`,
  );
  check(
    orcVolumes.some((v) => v.target === "/out" && !v.readOnly),
    `${where}: orchestrator should mount ./out on /out`,
  );
  if (variant === "gpu") {
    check(
      gpuDevices(inf).some((d) => d.driver === "nvidia" && (d.capabilities ?? []).includes("gpu")),
      `${where}: inference should reserve an NVIDIA GPU (driver: nvidia, capabilities: [gpu])`,
    );
  } else {
    check(gpuDevices(inf).length === 0, `${where}: inference should reserve no GPU`);
  }
  if (variant === "cpu") {
    const args = inf.command ?? [];
    check(
      argAfter(args, "--device") === "cpu" &&
        argAfter(args, "--host") === "0.0.0.0" &&
        argAfter(args, "--port") === String(PORT),
      `${where}: inference command should be --host 0.0.0.0 --port ${PORT} --device cpu`,
    );
  }
}

// ---- Kubernetes manifests.
const k8sDir = "deploy/k8s";
const docs = [];
for (const name of readdirSync(k8sDir).sort()) {
  if (!/\.ya?ml$/.test(name)) continue;
  const file = join(k8sDir, name);
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (!check(doc.errors.length === 0, `${file}: ${doc.errors.map((e) => e.message).join("; ")}`))
      continue;
    const value = doc.toJS();
    if (value == null) continue;
    check(
      value.apiVersion && value.kind && value.metadata?.name,
      `${file}: apiVersion, kind and metadata.name expected`,
    );
    docs.push({ file, value });
  }
}
const ofKind = (kind) => docs.filter((d) => d.value.kind === kind);
const one = (kind) => {
  const found = ofKind(kind);
  check(found.length === 1, `${k8sDir}: exactly one ${kind} expected, found ${found.length}`);
  return found[0];
};
const namespace = one("Namespace")?.value.metadata.name;
for (const { file, value } of docs) {
  if (value.kind === "Namespace") continue;
  check(
    value.metadata?.namespace === namespace,
    `${file}: ${value.kind} ${value.metadata?.name} should be in namespace ${namespace}`,
  );
}
const containersOf = (d) => d?.value.spec?.template?.spec?.containers ?? [];
const podOf = (d) => d?.value.spec?.template?.spec ?? {};
const nonRoot = (d, c) =>
  (c.securityContext?.runAsNonRoot ?? podOf(d).securityContext?.runAsNonRoot) === true;
const secretRefs = (d) =>
  containersOf(d).flatMap((c) =>
    (c.env ?? [])
      .filter((e) => e.valueFrom?.secretKeyRef)
      .map((e) => `${e.name}=${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}`),
  );

const deployment = one("Deployment");
const service = one("Service");
const job = one("Job");
if (deployment) {
  const where = deployment.file;
  const labels = deployment.value.spec?.template?.metadata?.labels ?? {};
  const selector = deployment.value.spec?.selector?.matchLabels ?? {};
  check(
    Object.entries(selector).every(([k, v]) => labels[k] === v) && Object.keys(selector).length,
    `${where}: selector.matchLabels should match the pod template's labels`,
  );
  check(Number(deployment.value.spec?.replicas) >= 1, `${where}: replicas expected`);
  const podUser = podOf(deployment).securityContext?.runAsUser;
  check(
    podUser === undefined || String(podUser) === inferenceUser,
    `${where}: runAsUser ${podUser} should be the image's USER ${inferenceUser}`,
  );
  check(containersOf(deployment).length > 0, `${where}: no containers`);
  for (const c of containersOf(deployment)) {
    const at = `${where}: container ${c.name}`;
    check(
      (c.ports ?? []).some((p) => p.containerPort === PORT),
      `${at}: containerPort ${PORT} expected`,
    );
    for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
      if (probe === "startupProbe" && !c[probe]) continue;
      check(
        c[probe]?.grpc?.port === PORT,
        `${at}: ${probe} should be a native gRPC probe on port ${PORT}`,
      );
    }
    check(
      String(c.resources?.limits?.["nvidia.com/gpu"]) === "1",
      `${at}: resources.limits nvidia.com/gpu: 1 expected`,
    );
    check(c.resources?.requests != null, `${at}: resources.requests expected`);
    check(nonRoot(deployment, c), `${at}: runAsNonRoot: true expected`);
    check(
      argAfter(c.args, "--host") === "0.0.0.0" && argAfter(c.args, "--port") === String(PORT),
      `${at}: args should include --host 0.0.0.0 --port ${PORT}`,
    );
  }
}
if (service) {
  const where = service.file;
  const spec = service.value.spec ?? {};
  check(spec.clusterIP === "None", `${where}: a headless Service (clusterIP: None) expected`);
  const port = (spec.ports ?? []).find((p) => p.port === PORT);
  check(port !== undefined, `${where}: port ${PORT} expected`);
  const labels = deployment?.value.spec?.template?.metadata?.labels ?? {};
  check(
    Object.keys(spec.selector ?? {}).length > 0 &&
      Object.entries(spec.selector ?? {}).every(([k, v]) => labels[k] === v),
    `${where}: selector should select the Deployment's pods`,
  );
  const target = port?.targetPort ?? port?.port;
  check(
    containersOf(deployment).some((c) =>
      (c.ports ?? []).some((p) => p.name === target || p.containerPort === target),
    ),
    `${where}: targetPort ${target} is not a port of the Deployment's containers`,
  );
}
if (job) {
  const where = job.file;
  const expected = `dns:///${service?.value.metadata.name}.${namespace}.svc.cluster.local:${PORT}`;
  check(containersOf(job).length > 0, `${where}: no containers`);
  for (const c of containersOf(job)) {
    const at = `${where}: container ${c.name}`;
    const servers = argAfter(c.args, "--servers");
    check(servers === expected, `${at}: --servers should be ${expected}, got ${servers}`);
    check(nonRoot(job, c), `${at}: runAsNonRoot: true expected`);
    for (const flag of ["--input_file", "--output_dir", "--models"]) {
      check(argAfter(c.args, flag) !== undefined, `${at}: ${flag} expected`);
    }
    const mounts = (c.volumeMounts ?? []).map((m) => m.mountPath);
    for (const flag of ["--input_file", "--output_dir"]) {
      const path = String(argAfter(c.args, flag));
      check(
        mounts.some((m) => path.startsWith(`${m}/`)),
        `${at}: ${flag} ${path} is on no mounted volume`,
      );
    }
  }
  check(
    ["Never", "OnFailure"].includes(podOf(job).restartPolicy),
    `${where}: restartPolicy Never or OnFailure expected`,
  );
  const claims = ofKind("PersistentVolumeClaim").map((d) => d.value.metadata.name);
  for (const v of podOf(job).volumes ?? []) {
    if (v.persistentVolumeClaim) {
      check(
        claims.includes(v.persistentVolumeClaim.claimName),
        `${where}: volume ${v.name} claims ${v.persistentVolumeClaim.claimName}, which no manifest defines`,
      );
    }
  }
  const a = secretRefs(deployment).filter((r) => r.startsWith("EMBED_AUTH_TOKEN="));
  const b = secretRefs(job).filter((r) => r.startsWith("EMBED_AUTH_TOKEN="));
  check(
    JSON.stringify(a) === JSON.stringify(b),
    `${k8sDir}: server and Job should take EMBED_AUTH_TOKEN from the same secret (${a} vs ${b})`,
  );
}

// ---- The sharded flow: Indexed Job of orchestrators, then the merge Job.
const shardedDir = join(k8sDir, "sharded");
const sharded = [];
for (const name of readdirSync(shardedDir).sort()) {
  if (!/\.ya?ml$/.test(name)) continue;
  const file = join(shardedDir, name);
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const value = doc.toJS();
    if (value != null) sharded.push({ file, value });
  }
}
const shardedJobs = sharded.filter((d) => d.value.kind === "Job");
const indexed = shardedJobs.find((d) => d.value.spec?.completionMode === "Indexed");
const mergeJob = shardedJobs.find((d) => containersOf(d)[0]?.args?.[0] === "merge");
check(indexed !== undefined, `${shardedDir}: an Indexed Job (completionMode: Indexed) expected`);
check(mergeJob !== undefined, `${shardedDir}: a Job running embed-multi merge expected`);
if (indexed) {
  const where = indexed.file;
  const spec = indexed.value.spec;
  const args = containersOf(indexed)[0]?.args ?? [];
  check(
    argAfter(args, "--num_shards") === String(spec.completions),
    `${where}: --num_shards ${argAfter(args, "--num_shards")} should equal completions ${spec.completions}`,
  );
  check(Number(spec.parallelism) >= 1, `${where}: parallelism expected`);
  check(Number(spec.backoffLimitPerIndex) >= 1, `${where}: backoffLimitPerIndex expected`);
  check(podOf(indexed).restartPolicy === "Never", `${where}: backoffLimitPerIndex needs restartPolicy Never`);
  if (mergeJob) {
    const margs = containersOf(mergeJob)[0]?.args ?? [];
    check(
      argAfter(margs, "--output_dir") === argAfter(args, "--output_dir"),
      `${mergeJob.file}: merge --output_dir should be the shards' --output_dir`,
    );
    const claim = (d) => (podOf(d).volumes ?? []).find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim.claimName;
    check(claim(mergeJob) === claim(indexed), `${mergeJob.file}: the merge should mount the shards' volume`);
    const pvc = sharded.find((d) => d.value.kind === "PersistentVolumeClaim" && d.value.metadata.name === claim(indexed));
    check(
      pvc?.value.spec?.accessModes?.includes("ReadWriteMany"),
      `${shardedDir}: the shards' volume ${claim(indexed)} must be ReadWriteMany (pods on several nodes)`,
    );
  }
}
const hpa = sharded.find((d) => d.value.kind === "HorizontalPodAutoscaler");
check(
  hpa?.value.spec?.scaleTargetRef?.name === deployment?.value.metadata.name,
  `${shardedDir}: a HorizontalPodAutoscaler of the inference Deployment expected`,
);
if (deployment) {
  const annotations = deployment.value.spec?.template?.metadata?.annotations ?? {};
  const c = containersOf(deployment)[0] ?? {};
  const metricsPort = argAfter(c.args ?? [], "--metrics_port");
  check(
    annotations["prometheus.io/scrape"] === "true" && annotations["prometheus.io/port"] === metricsPort,
    `${deployment.file}: pods should be annotated prometheus.io/scrape and prometheus.io/port = --metrics_port (${metricsPort})`,
  );
  check(
    (c.ports ?? []).some((p) => String(p.containerPort) === metricsPort && p.name === "metrics"),
    `${deployment.file}: a containerPort named metrics for --metrics_port expected`,
  );
}

for (const failure of failures) console.error(`FAIL (deploy): ${failure}`);
if (failures.length) {
  console.error(`deploy: ${failures.length} of ${checks} file checks failed`);
  process.exit(1);
}
console.error(`deploy: all ${checks} file checks hold`);
