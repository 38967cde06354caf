package io.msync.client

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.io.File

/** The SDK acts on the code table of docs/protocol.md §6, row by row. */
class CodesTest {
    @Test fun everyDocumentedCodeGetsTheTablesAction() {
        // Maven runs tests in sdk/kotlin/lib.
        val doc = File("../../../docs/protocol.md").readText()
        val sec = doc.substring(doc.indexOf("## 6. Codes"), doc.indexOf("## 7. "))
        val rows = Regex("""(?m)^\| (\d{4}) \|.*\| ([a-z ]+) \|$""").findAll(sec).map { it.groupValues[1].toInt() to it.groupValues[2] }.toList()
        assertTrue(rows.size >= 20, "only ${rows.size} code rows found")
        for ((code, action) in rows) {
            val got = when {
                Codes.needsToken(code) -> "new token"
                Codes.refusal(code) -> "retry later"
                Codes.reconnects(code) -> "reconnect"
                else -> "stop"
            }
            assertEquals(action, got, "code $code")
        }
        // Unassigned: from 5000 stop, below 1000 reconnect (§6).
        assertFalse(Codes.reconnects(5001))
        assertTrue(Codes.reconnects(999))
    }
}
