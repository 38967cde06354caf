package io.msync.client

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.nio.channels.FileChannel
import java.nio.file.AtomicMoveNotSupportedException
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.nio.file.StandardOpenOption

/**
 * Keeps the sync point (highest processed oplog id) of every channel. The
 * client calls [load] once at start and [save] from its channel workers,
 * concurrently for different channels and with increasing ids per channel:
 * implementations must be thread-safe. The SDK acks an oplog only after
 * [save] returned, so a [save] that is durable when it returns keeps the app
 * from seeing an oplog twice across restarts.
 */
interface SyncPointStore {
    fun load(): Map<String, Long>
    fun save(channel: String, id: Long)
}

/** Forgets everything when the process exits; the server's points are used next time. */
class MemoryStore : SyncPointStore {
    private val points = HashMap<String, Long>()
    @Synchronized override fun load(): Map<String, Long> = HashMap(points)
    @Synchronized override fun save(channel: String, id: Long) { points[channel] = id }
}

/**
 * Sync points in one JSON file, the same format as the Go SDK's FileStore
 * (`{"version":1,"points":{"chat/u/alice":42}}`). Every save rewrites the
 * file atomically: write a temporary file in the same directory, fsync it,
 * rename it over the old one, fsync the directory. After a crash or power
 * loss the file holds the old or the new points, never a torn mix. On
 * Android keep it in `Context.getFilesDir()` (not the cache dir, which the
 * OS may clear). One file belongs to one client.
 *
 * The constructor creates the file when it is missing (the directory must
 * exist), so a path that cannot be written fails here, not at the first
 * acknowledgement; a file that does not parse is a [StoreFileException].
 */
class FileStore(val file: File) : SyncPointStore {
    private var points: Map<String, Long>

    init {
        points = if (file.exists()) parse(readText()) else emptyMap<String, Long>().also { write(it) }
    }

    private fun readText() = try { file.readText(Charsets.UTF_8) } catch (e: IOException) {
        throw StoreFileException("read sync points ${file.path}: ${e.message}", e)
    }

    @Synchronized override fun load(): Map<String, Long> = HashMap(points)

    @Synchronized override fun save(channel: String, id: Long) {
        if (points[channel] == id) return
        val next = HashMap(points)
        next[channel] = id
        write(next)
        points = next
    }

    private fun write(pts: Map<String, Long>) {
        val sb = StringBuilder(32 + pts.size * 32).append("{\"version\":1,\"points\":{")
        var first = true
        for ((ch, id) in pts.toSortedMap()) {
            if (!first) sb.append(',')
            first = false
            quote(sb, ch); sb.append(':').append(id)
        }
        sb.append("}}")
        val dir = file.absoluteFile.parentFile
        val tmp = File.createTempFile(".${file.name}.tmp-", "", dir)
        try {
            FileOutputStream(tmp).use { out ->
                out.write(sb.toString().toByteArray(Charsets.UTF_8))
                out.fd.sync()
            }
            try {
                Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
            } catch (e: AtomicMoveNotSupportedException) {
                throw IOException("atomic rename not supported in $dir", e)
            }
        } catch (e: IOException) {
            tmp.delete()
            throw e
        }
        // Without the directory fsync the rename may not survive a power
        // loss; some file systems refuse it, and the data is durable anyway.
        try { FileChannel.open(dir.toPath(), StandardOpenOption.READ).use { it.force(true) } } catch (_: IOException) {}
    }

    companion object {
        private fun quote(sb: StringBuilder, s: String) {
            sb.append('"')
            for (c in s) when {
                c == '"' -> sb.append("\\\""); c == '\\' -> sb.append("\\\\")
                c.code < 0x20 -> sb.append(String.format("\\u%04x", c.code))
                else -> sb.append(c)
            }
            sb.append('"')
        }

        /** Parses the store's one shape; anything else is a StoreFileException. */
        internal fun parse(text: String): Map<String, Long> {
            val p = MiniJson(text)
            val root = try { p.parse() } catch (e: IllegalArgumentException) {
                throw StoreFileException("bad sync point file: ${e.message}", e)
            }
            val doc = root as? Map<*, *> ?: throw StoreFileException("bad sync point file: not an object")
            val version = doc["version"]
            if (version !is Number || version.toLong() != 1L) throw StoreFileException("bad sync point file: version $version, want 1")
            val pts = doc["points"] ?: return emptyMap()
            if (pts !is Map<*, *>) throw StoreFileException("bad sync point file: points is not an object")
            val out = HashMap<String, Long>()
            for ((k, v) in pts) {
                if (v !is Long || v < 0) throw StoreFileException("bad sync point file: point of $k is $v")
                out[k as String] = v
            }
            return out
        }
    }
}

/**
 * A strict, tiny JSON reader (objects, arrays, strings, integers, true,
 * false, null) for the sync point file and the test harness. Not on the
 * wire's hot path: the wire is protobuf.
 */
class MiniJson(private val s: String) {
    private var i = 0

    fun parse(): Any? {
        val v = value()
        ws()
        require(i == s.length) { "trailing data at $i" }
        return v
    }

    private fun ws() { while (i < s.length && s[i] in " \t\r\n") i++ }

    private fun value(): Any? {
        ws()
        require(i < s.length) { "unexpected end" }
        return when (val c = s[i]) {
            '{' -> obj(); '[' -> arr(); '"' -> str()
            't' -> lit("true", true); 'f' -> lit("false", false); 'n' -> lit("null", null)
            else -> { require(c == '-' || c.isDigit()) { "unexpected '$c' at $i" }; num() }
        }
    }

    private fun lit(w: String, v: Any?): Any? { require(s.startsWith(w, i)) { "bad literal at $i" }; i += w.length; return v }

    private fun num(): Any {
        val start = i
        if (s[i] == '-') i++
        while (i < s.length && (s[i].isDigit() || s[i] in ".eE+-")) i++
        val t = s.substring(start, i)
        return t.toLongOrNull() ?: t.toDoubleOrNull() ?: throw IllegalArgumentException("bad number $t")
    }

    private fun str(): String {
        i++
        val sb = StringBuilder()
        while (true) {
            require(i < s.length) { "unterminated string" }
            val c = s[i++]
            when {
                c == '"' -> return sb.toString()
                c == '\\' -> {
                    require(i < s.length) { "bad escape" }
                    when (val e = s[i++]) {
                        '"' -> sb.append('"'); '\\' -> sb.append('\\'); '/' -> sb.append('/')
                        'b' -> sb.append('\b'); 'f' -> sb.append('\u000c'); 'n' -> sb.append('\n')
                        'r' -> sb.append('\r'); 't' -> sb.append('\t')
                        'u' -> { require(i + 4 <= s.length) { "bad escape" }; sb.append(s.substring(i, i + 4).toInt(16).toChar()); i += 4 }
                        else -> throw IllegalArgumentException("bad escape \\$e")
                    }
                }
                c.code < 0x20 -> throw IllegalArgumentException("control character in string")
                else -> sb.append(c)
            }
        }
    }

    private fun obj(): Map<String, Any?> {
        i++
        val m = LinkedHashMap<String, Any?>()
        ws()
        if (i < s.length && s[i] == '}') { i++; return m }
        while (true) {
            ws()
            require(i < s.length && s[i] == '"') { "want a key at $i" }
            val k = str()
            ws()
            require(i < s.length && s[i] == ':') { "want ':' at $i" }
            i++
            m[k] = value()
            ws()
            require(i < s.length) { "unterminated object" }
            when (s[i++]) { ',' -> continue; '}' -> return m; else -> throw IllegalArgumentException("want ',' or '}' at ${i - 1}") }
        }
    }

    private fun arr(): List<Any?> {
        i++
        val l = ArrayList<Any?>()
        ws()
        if (i < s.length && s[i] == ']') { i++; return l }
        while (true) {
            l.add(value())
            ws()
            require(i < s.length) { "unterminated array" }
            when (s[i++]) { ',' -> continue; ']' -> return l; else -> throw IllegalArgumentException("want ',' or ']' at ${i - 1}") }
        }
    }
}
