// A command-line device built on the msync Kotlin SDK: it connects, prints
// every oplog as one JSON line on stdout (like `msync client`), acknowledges
// it, and logs connection events on stderr until interrupted.
package io.msync.sample

import io.msync.client.Event
import io.msync.client.FileStore
import io.msync.client.Handler
import io.msync.client.KickedException
import io.msync.client.Logger
import io.msync.client.MemoryStore
import io.msync.client.MsyncClient
import io.msync.client.Options
import io.msync.client.Push
import java.io.File
import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.util.Base64
import java.util.concurrent.CountDownLatch
import kotlin.system.exitProcess

private const val USAGE = """Usage: sample --token T --device D --biz B[,B2...] [--addr host:port|tls://host:port]
              [--platform P] [--app-version V] [--state FILE] [--room R[,R2...]]

Prints one JSON line per oplog, in id order per channel:
  {"biz":"demo","channel":"demo/u/alice","id":7,"payload":"hi"}
("payload_base64" when the payload is not UTF-8) and pushes as
  {"push":"...","room":"...","created_ms":...}
--state keeps the sync points in FILE, so a restart resumes where it stopped.

Example (a server from `make run`):
  mvn -q -f sdk/kotlin/pom.xml -pl sample -am compile exec:java -Dexec.args="--token $(bin/msync token --user alice) --device kt-1 --biz demo"
"""

fun main(args: Array<String>) {
    val flags = parse(args)
    val token = flags["token"]; val device = flags["device"]; val bizs = flags["biz"]?.split(',')?.map { it.trim() }?.filter { it.isNotEmpty() }
    if (token == null || device == null || bizs.isNullOrEmpty()) {
        System.err.print(USAGE)
        exitProcess(2)
    }
    val out = System.out
    val stopped = CountDownLatch(1)
    val client = MsyncClient(flags["addr"] ?: "127.0.0.1:3101", Options(
        device = device,
        tokenProvider = { token },
        platform = flags["platform"] ?: "unknown",
        appVersion = flags["app-version"] ?: "",
        store = flags["state"]?.let { FileStore(File(it)) } ?: MemoryStore(),
        logger = { level, msg, err -> if (level >= Logger.Level.WARN) System.err.println("$level $msg${err?.let { ": $it" } ?: ""}") },
        onEvent = { e ->
            System.err.println("event: $e")
            if (e is Event.Stopped) stopped.countDown()
            if (e is Event.Disconnected && e.error !is KickedException && e.error.message?.contains("token") == true) stopped.countDown()
        },
        onPush = { p: Push -> synchronized(out) { out.println(pushJson(p)); out.flush() } },
    ))
    val printer = Handler { op ->
        val text = utf8OrNull(op.payload)
        val payload = if (text != null) "\"payload\":${quote(text)}" else "\"payload_base64\":\"${Base64.getEncoder().encodeToString(op.payload)}\""
        synchronized(out) {
            out.println("{\"biz\":${quote(op.biz)},\"channel\":${quote(op.channel)},\"id\":${op.id},$payload}")
            out.flush()
        }
    }
    for (b in bizs) client.registerBiz(b, printer)
    flags["room"]?.split(',')?.filter { it.isNotBlank() }?.forEach { client.joinRoom(it.trim()) }
    Runtime.getRuntime().addShutdownHook(Thread { client.close() })
    client.start()
    stopped.await()
    client.close()
    exitProcess(1)
}

private fun parse(args: Array<String>): Map<String, String> {
    val m = HashMap<String, String>()
    var i = 0
    while (i < args.size) {
        val a = args[i]
        if (!a.startsWith("--")) { System.err.print(USAGE); exitProcess(2) }
        val eq = a.indexOf('=')
        if (eq > 0) { m[a.substring(2, eq)] = a.substring(eq + 1); i++; continue }
        if (i + 1 >= args.size) { System.err.print(USAGE); exitProcess(2) }
        m[a.substring(2)] = args[i + 1]
        i += 2
    }
    return m
}

private fun pushJson(p: Push): String {
    val text = utf8OrNull(p.payload)
    val sb = StringBuilder("{")
    if (text != null) sb.append("\"push\":").append(quote(text)) else sb.append("\"push_base64\":\"").append(Base64.getEncoder().encodeToString(p.payload)).append('"')
    if (p.room.isNotEmpty()) sb.append(",\"room\":").append(quote(p.room))
    if (p.createdMs != 0L) sb.append(",\"created_ms\":").append(p.createdMs)
    return sb.append('}').toString()
}

private fun utf8OrNull(b: ByteArray): String? = try {
    Charsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(b)).toString()
} catch (_: CharacterCodingException) { null }

private fun quote(s: String): String {
    val sb = StringBuilder("\"")
    for (c in s) when {
        c == '"' -> sb.append("\\\""); c == '\\' -> sb.append("\\\\"); c == '\n' -> sb.append("\\n")
        c == '\r' -> sb.append("\\r"); c == '\t' -> sb.append("\\t")
        c.code < 0x20 -> sb.append(String.format("\\u%04x", c.code))
        else -> sb.append(c)
    }
    return sb.append('"').toString()
}
