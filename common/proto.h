/* PostgreSQL v3 wire protocol: framing of typed messages and builders for the messages the
 * proxy itself writes (errors, auth requests, startup). Knows bytes, not connections or
 * pools. Lengths on the wire include themselves but not the type byte. */
#ifndef PGS_PROTO_H
#define PGS_PROTO_H

#include "common/buf.h"

#define PGS_PROTO_V3 196608u /* 3.0 */
#define PGS_CODE_CANCEL 80877102u
#define PGS_CODE_SSL 80877103u
#define PGS_CODE_GSSENC 80877104u
#define PGS_MAX_STARTUP_LEN 10000u  /* as PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PGS_MAX_MSG_LEN 0x40000000u /* 1 GiB: longer messages are protocol violations */
#define PGS_HDR_LEN 5u

/* Message types, one table per direction: the same letter means different things in each
 * (C is Close from a client, CommandComplete from a server), as PostgreSQL's protocol.h
 * and Odyssey's kiwi name them. */
enum pgs_fe_type {
    PGS_FE_BIND = 'B',
    PGS_FE_CLOSE = 'C',
    PGS_FE_COPY_DATA = 'd',
    PGS_FE_COPY_DONE = 'c',
    PGS_FE_COPY_FAIL = 'f',
    PGS_FE_DESCRIBE = 'D',
    PGS_FE_EXECUTE = 'E',
    PGS_FE_FLUSH = 'H',
    PGS_FE_FUNCTION_CALL = 'F',
    PGS_FE_PARSE = 'P',
    PGS_FE_PASSWORD = 'p', /* also SASLInitialResponse and SASLResponse */
    PGS_FE_QUERY = 'Q',
    PGS_FE_SYNC = 'S',
    PGS_FE_TERMINATE = 'X',
};

enum pgs_be_type {
    PGS_BE_AUTH = 'R',
    PGS_BE_KEY_DATA = 'K',
    PGS_BE_BIND_COMPLETE = '2',
    PGS_BE_CLOSE_COMPLETE = '3',
    PGS_BE_COMMAND_COMPLETE = 'C',
    PGS_BE_COPY_DATA = 'd',
    PGS_BE_COPY_DONE = 'c',
    PGS_BE_COPY_IN = 'G',
    PGS_BE_COPY_OUT = 'H',
    PGS_BE_COPY_BOTH = 'W',
    PGS_BE_DATA_ROW = 'D',
    PGS_BE_EMPTY_QUERY = 'I',
    PGS_BE_ERROR = 'E',
    PGS_BE_FUNCTION_RESULT = 'V',
    PGS_BE_NEGOTIATE = 'v',
    PGS_BE_NO_DATA = 'n',
    PGS_BE_NOTICE = 'N',
    PGS_BE_NOTIFY = 'A',
    PGS_BE_PARAM_DESC = 't',
    PGS_BE_PARAM_STATUS = 'S',
    PGS_BE_PARSE_COMPLETE = '1',
    PGS_BE_PORTAL_SUSPENDED = 's',
    PGS_BE_READY = 'Z',
    PGS_BE_ROW_DESC = 'T',
};

/* Transaction status of ReadyForQuery. */
enum { PGS_TX_IDLE = 'I', PGS_TX_BLOCK = 'T', PGS_TX_FAILED = 'E' };

/* Result of looking at the start of a typed message. */
typedef struct pgs_frame {
    char type;
    uint32_t len; /* the wire length: body + 4 */
    size_t total; /* bytes of the whole message: len + 1 */
} pgs_frame;

/* Reads a typed message header from p[0..n). Returns 1 with *f filled when the header is
 * complete, 0 when more bytes are needed, -1 when the length is < 4 or > max_len. */
int pgs_frame_read(const uint8_t *p, size_t n, uint32_t max_len, pgs_frame *f);

/* True for the message types a frontend may send after startup. */
bool pgs_frontend_type_valid(char type);

/* Message builder: begin writes the type and a length placeholder, end fills the length.
 * Errors are sticky in the buffer (pgs_buf_failed). type 0 starts an untyped message
 * (startup, cancel). */
size_t pgs_msg_begin(pgs_buf *b, char type);
void pgs_msg_end(pgs_buf *b, size_t start);

/* Appends an ErrorResponse with severity, SQLSTATE
 * and a printf-style message. */
void pgs_msg_error(pgs_buf *b, const char *severity, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void pgs_msg_notice_typed(pgs_buf *b, char type, const char *severity, const char *sqlstate, const char *msg);
/* FATAL 53200 "out of memory" as a whole ErrorResponse, for when no buffer can be built. */
extern const uint8_t pgs_msg_fatal_oom[];
extern const size_t pgs_msg_fatal_oom_len;
void pgs_msg_auth(pgs_buf *b, uint32_t code, const void *extra, size_t extra_len);
void pgs_msg_param_status(pgs_buf *b, const char *name, const char *value);
void pgs_msg_backend_key(pgs_buf *b, uint32_t pid, uint32_t secret);
void pgs_msg_ready(pgs_buf *b, char status);
void pgs_msg_query(pgs_buf *b, const char *sql);
void pgs_msg_row_desc_text(pgs_buf *b, const char *const *cols, int n);
void pgs_msg_complete(pgs_buf *b, const char *tag); /* CommandComplete */

/* Fields of an ErrorResponse/NoticeResponse body, pointing into the body. */
typedef struct pgs_error_fields {
    const char *severity;
    const char *sqlstate;
    const char *message;
} pgs_error_fields;

/* Parses an ErrorResponse/NoticeResponse body (without type and length). Missing fields are
 * set to "". Returns -1 when the body is malformed. */
int pgs_error_parse(const uint8_t *body, size_t n, pgs_error_fields *out);

#endif
