package io.msync.client

import java.io.File
import java.io.IOException
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Files
import java.security.KeyStore
import java.time.Duration
import java.util.Base64
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec
import javax.net.ssl.SSLContext
import javax.net.ssl.SSLSocketFactory
import javax.net.ssl.TrustManagerFactory

/** Polls [cond] until it holds or [timeoutMs] passes; fails with [what]. Never a fixed sleep. */
fun eventually(what: String, timeoutMs: Long = 20_000, cond: () -> Boolean) {
    val deadline = System.nanoTime() + timeoutMs * 1_000_000
    while (!cond()) {
        if (System.nanoTime() > deadline) throw AssertionError("timed out after $timeoutMs ms waiting for: $what")
        Thread.sleep(10)
    }
}

/** Records every event of a client. */
class Events {
    val all = CopyOnWriteArrayList<Event>()
    val sink: (Event) -> Unit = { all.add(it) }
    inline fun <reified T : Event> of(): List<T> = all.filterIsInstance<T>()
    inline fun <reified T : Event> count() = of<T>().size
    override fun toString() = all.joinToString("\n  ", "events:\n  ")
}

/** A handler that records (channel, id, payload) in order. */
class Recorder {
    val ops = CopyOnWriteArrayList<Oplog>()
    val handler = Handler { ops.add(it) }
    fun ids(channel: String? = null) = ops.filter { channel == null || it.channel == channel }.map { it.id }
}

fun freePort(): Int = ServerSocket(0, 50, java.net.InetAddress.getByName("127.0.0.1")).use { it.localPort }

/** HS256 JWT with subject and expiry, what pkg/auth verifies (businesses mint these). */
fun signToken(secret: String, user: String, ttlSeconds: Long = 3600): String {
    val enc = Base64.getUrlEncoder().withoutPadding()
    val now = System.currentTimeMillis() / 1000
    val head = enc.encodeToString("""{"alg":"HS256","typ":"JWT"}""".toByteArray())
    val body = enc.encodeToString("""{"sub":"$user","iat":$now,"exp":${now + ttlSeconds}}""".toByteArray())
    val mac = Mac.getInstance("HmacSHA256").apply { init(SecretKeySpec(secret.toByteArray(), "HmacSHA256")) }
    return "$head.$body." + enc.encodeToString(mac.doFinal("$head.$body".toByteArray()))
}

/** The repository root (where go.mod is), found upwards from the working directory. */
val repoRoot: File by lazy {
    var d: File? = File(System.getProperty("user.dir")).absoluteFile
    while (d != null && !(File(d, "go.mod").isFile && File(d, "cmd/msync").isDirectory)) d = d.parentFile
    d ?: throw IllegalStateException("repository root (go.mod with cmd/msync) not found above ${System.getProperty("user.dir")}")
}

/**
 * The msync binary: MSYNC_BIN (what `make test-kotlin` passes, after `make
 * build`), else built once per test JVM with `go build` into a temp dir.
 */
val msyncBinary: File by lazy {
    System.getenv("MSYNC_BIN")?.takeIf { it.isNotEmpty() }?.let { p ->
        File(p).also { require(it.canExecute()) { "MSYNC_BIN=$p is not an executable" } }
    } ?: run {
        val out = File(Files.createTempDirectory("msync-bin").toFile(), "msync")
        val pb = ProcessBuilder("go", "build", "-o", out.path, "./cmd/msync").directory(repoRoot).redirectErrorStream(true)
        val p = try { pb.start() } catch (e: IOException) {
            throw IllegalStateException("the server tests need msync: set MSYNC_BIN or install Go (go build ./cmd/msync failed to start: ${e.message})", e)
        }
        val log = p.inputStream.bufferedReader().readText()
        check(p.waitFor(5, TimeUnit.MINUTES) && p.exitValue() == 0) { "go build ./cmd/msync failed:\n$log" }
        out.deleteOnExit()
        out
    }
}

/** A self-signed certificate for 127.0.0.1 made with the JDK's keytool, as PEM files for msync and a client trust. */
class TestCert(dir: File) {
    val certPem = File(dir, "cert.pem")
    val keyPem = File(dir, "key.pem")
    val sslFactory: SSLSocketFactory

    init {
        val ks = File(dir, "test.p12")
        val keytool = File(System.getProperty("java.home"), "bin/keytool").path
        val p = ProcessBuilder(keytool, "-genkeypair", "-alias", "msync", "-keyalg", "EC", "-groupname", "secp256r1",
            "-sigalg", "SHA256withECDSA", "-dname", "CN=msync test", "-ext", "SAN=ip:127.0.0.1,dns:localhost",
            "-validity", "2", "-storetype", "PKCS12", "-keystore", ks.path, "-storepass", "changeit", "-keypass", "changeit")
            .redirectErrorStream(true).start()
        val out = p.inputStream.bufferedReader().readText()
        check(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0) { "keytool failed: $out" }
        val store = KeyStore.getInstance("PKCS12").apply { ks.inputStream().use { load(it, "changeit".toCharArray()) } }
        val cert = store.getCertificate("msync")
        val key = store.getKey("msync", "changeit".toCharArray())
        val mime = Base64.getMimeEncoder(64, "\n".toByteArray())
        certPem.writeText("-----BEGIN CERTIFICATE-----\n" + mime.encodeToString(cert.encoded) + "\n-----END CERTIFICATE-----\n")
        keyPem.writeText("-----BEGIN PRIVATE KEY-----\n" + mime.encodeToString(key.encoded) + "\n-----END PRIVATE KEY-----\n")
        val trust = KeyStore.getInstance("PKCS12").apply { load(null, null); setCertificateEntry("msync", cert) }
        val tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm()).apply { init(trust) }
        sslFactory = SSLContext.getInstance("TLS").apply { init(null, tmf.trustManagers, null) }.socketFactory
    }
}

/**
 * A real `msync all` child process on free ports with a temp data dir and a
 * generated config. [restart] after [kill9] reuses the same dir and ports.
 */
class MsyncServer(
    val dataDir: File = Files.createTempDirectory("msync-kt-data").toFile(),
    val heartbeat: String = "2s",
    val extraComet: String = "",
    val pageLimit: Int = 50,
    val tls: TestCert? = null,
    /** Appended to the generated config (top-level sections, e.g. upstreams: for CallTest). */
    val extraConfig: String = "",
) : AutoCloseable {
    val cometPort = freePort()
    val httpPort = freePort()
    val tlsPort = if (tls != null) freePort() else 0
    val addr get() = "127.0.0.1:$cometPort"
    val tlsAddr get() = "tls://127.0.0.1:$tlsPort"
    private val configFile = File(dataDir, "msync-test.yaml")
    private val logFile = File(dataDir, "server.log")
    private var proc: Process? = null
    private val http: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build()

    init {
        val tlsYaml = if (tls == null) "" else """
          |  tls:
          |    cert_file: ${tls.certPem.path}
          |    key_file: ${tls.keyPem.path}
          |    tcp_addr: 127.0.0.1:$tlsPort
          |""".trimMargin()
        configFile.writeText("""
            |secret: $SECRET
            |dev: true  # short test API key
            |log: {level: warn}
            |api_keys:
            |  - {key: $API_KEY, bizs: ["*"]}
            |comet:
            |  addr: 127.0.0.1:$cometPort
            |  ws_addr: ""
            |  heartbeat: $heartbeat
            |  auth_timeout: 3s
            |  ack_timeout: 10s
            |  page_limit: $pageLimit
            |  client_rooms: ["*"]
            |  max_rooms: 3  # RoomLimitTest: below the SDK's own 64
            |$extraComet
            |$tlsYaml
            |logic:
            |  http_addr: 127.0.0.1:$httpPort
            |bizs:
            |  - {name: demo, target: user, multi_device: true, ttl: 7d}
            |  - {name: cmd, target: device, ttl: 1d}
            |  - {name: latest, target: user, backlog: "latest:5"}
            |  - {name: typing, target: user, persistent: false}
            |""".trimMargin() + extraConfig)
        start()
    }

    fun start() {
        val pb = ProcessBuilder(msyncBinary.path, "all", "-c", configFile.path, "--data", File(dataDir, "store").path)
            .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(logFile))
        proc = pb.start()
        // A test JVM that dies must not leave msync running.
        val p = proc!!
        Runtime.getRuntime().addShutdownHook(Thread { p.destroyForcibly() })
        eventually("msync to serve /healthz and the comet port (log: ${logFile.path})\n${logTail()}", 30_000) {
            check(proc!!.isAlive) { "msync exited with ${proc!!.exitValue()}:\n${logTail()}" }
            healthy() && canConnect(cometPort) && (tls == null || canConnect(tlsPort))
        }
    }

    private fun canConnect(port: Int) = try { Socket().use { it.connect(InetSocketAddress("127.0.0.1", port), 200) }; true } catch (_: IOException) { false }

    private fun healthy() = try { get("/healthz").statusCode() == 200 } catch (_: IOException) { false }

    fun logTail(): String = if (logFile.exists()) logFile.readLines().takeLast(30).joinToString("\n") else ""

    /** SIGKILL: no shutdown code runs, the store sees a crash. */
    fun kill9() {
        val p = proc ?: return
        p.destroyForcibly()
        check(p.waitFor(30, TimeUnit.SECONDS)) { "msync did not die" }
    }

    fun signal(sig: String) {
        val p = ProcessBuilder("kill", "-$sig", proc!!.pid().toString()).start()
        check(p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0) { "kill -$sig failed" }
    }

    override fun close() {
        val p = proc ?: return
        p.destroy()
        if (!p.waitFor(15, TimeUnit.SECONDS)) { p.destroyForcibly(); p.waitFor(10, TimeUnit.SECONDS) }
        proc = null
        dataDir.deleteRecursively()
    }

    fun token(user: String) = signToken(SECRET, user)

    private fun get(path: String): HttpResponse<String> =
        http.send(HttpRequest.newBuilder(URI("http://127.0.0.1:$httpPort$path")).timeout(Duration.ofSeconds(10)).GET().build(),
            HttpResponse.BodyHandlers.ofString())

    fun post(path: String, json: String): HttpResponse<String> =
        http.send(HttpRequest.newBuilder(URI("http://127.0.0.1:$httpPort$path")).timeout(Duration.ofSeconds(10))
            .header("Authorization", "Bearer $API_KEY").header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(json)).build(), HttpResponse.BodyHandlers.ofString())

    /** POST /v1/sync; returns the acknowledged id, throwing unless 200. */
    fun publish(biz: String, owner: String, payload: String, ownerKey: String = "user"): Long {
        val r = post("/v1/sync", """{"biz":"$biz","$ownerKey":"$owner","payload":"$payload"}""")
        check(r.statusCode() == 200) { "publish: ${r.statusCode()} ${r.body()}" }
        return ((MiniJson(r.body()).parse() as Map<*, *>)["id"] as Long)
    }

    /** POST /v1/sync/batch of [n] oplogs to one user; returns the ids. */
    fun publishBatch(biz: String, user: String, payloads: List<String>): List<Long> {
        val items = payloads.joinToString(",") { """{"biz":"$biz","user":"$user","payload":"$it"}""" }
        val r = post("/v1/sync/batch", """{"items":[$items]}""")
        check(r.statusCode() == 200) { "batch: ${r.statusCode()} ${r.body()}" }
        val results = (MiniJson(r.body()).parse() as Map<*, *>)["results"] as List<*>
        return results.map { ((it as Map<*, *>)["id"] as Long) }
    }

    companion object {
        const val SECRET = "kotlin-sdk-test-secret-0123456789"
        const val API_KEY = "kt-key"
    }
}
