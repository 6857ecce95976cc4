/* Tests for proxy/scram.c: the RFC 7677 SCRAM-SHA-256 vector in both roles, secrets made by
 * PostgreSQL 15, failures (wrong password, foreign nonce, malformed messages) and MD5 hashes
 * checked against values computed outside this code (md5sum, Python hashlib). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/scram.h"

/* RFC 7677 section 3. */
#define RFC_PASSWORD "pencil"
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SALT_B64 "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
/* As printed in RFC 7677 and recomputed with Python's hashlib/hmac. */
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static const uint8_t rfc_salt[16] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                     0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};

/* The same secret as PostgreSQL would store it, computed with Python's hashlib/hmac. */
static const char rfc_secret[] =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
    ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

/* rolpassword of "CREATE ROLE u1 PASSWORD 'pencil'" on PostgreSQL 15. */
static const char pg_secret_pencil[] =
    "SCRAM-SHA-256$4096:4GmX+E96n8s7nNndIrSrTQ==$gzzVQW95v+WUleOPCPWQXeWZ8nLg/78AGTwzSh3aTIQ="
    ":PZLYuTyssde8Q4IlMQd3kap+Tb/38TbDOcs4g1HLZng=";

static const uint8_t *u8(const char *s)
{
    return (const uint8_t *)s;
}

static void assert_buf_str(const pgs_buf *b, const char *want)
{
    assert_false(pgs_buf_failed(b));
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
}

static void rfc_secret_make(px_scram_secret *sec)
{
    assert_int_equal(px_scram_secret_from_password_salt(RFC_PASSWORD, 4096, rfc_salt, sizeof rfc_salt, sec),
                     0);
}

/* A server that has answered the RFC client-first, waiting for client-final. */
static void rfc_server_at_final(px_scram_server *st)
{
    px_scram_secret sec;
    pgs_buf out = PGS_BUF_INIT;
    rfc_secret_make(&sec);
    px_scram_server_init(st, &sec);
    assert_int_equal(
        px_scram_server_first(st, u8(RFC_CLIENT_FIRST), strlen(RFC_CLIENT_FIRST), RFC_SNONCE, &out), 0);
    pgs_buf_free(&out);
}

static void test_rfc7677_server(void **state)
{
    px_scram_secret sec;
    px_scram_server st;
    pgs_buf out = PGS_BUF_INIT;
    rfc_secret_make(&sec);
    px_scram_server_init(&st, &sec);
    assert_int_equal(
        px_scram_server_first(&st, u8(RFC_CLIENT_FIRST), strlen(RFC_CLIENT_FIRST), RFC_SNONCE, &out), 0);
    assert_buf_str(&out, RFC_SERVER_FIRST);
    pgs_buf_clear(&out);
    assert_int_equal(px_scram_server_final(&st, u8(RFC_CLIENT_FINAL), strlen(RFC_CLIENT_FINAL), &out), 0);
    assert_buf_str(&out, RFC_SERVER_FINAL);
    /* The exchange is over; a replay is out of turn. */
    assert_int_equal(px_scram_server_final(&st, u8(RFC_CLIENT_FINAL), strlen(RFC_CLIENT_FINAL), &out), -1);
    pgs_buf_free(&out);
}

static void test_rfc7677_client(void **state)
{
    px_scram_client st;
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_scram_client_first_user(&st, RFC_PASSWORD, "user", RFC_CNONCE, &out), 0);
    assert_buf_str(&out, RFC_CLIENT_FIRST);
    pgs_buf_clear(&out);
    assert_int_equal(px_scram_client_final(&st, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), &out), 0);
    assert_buf_str(&out, RFC_CLIENT_FINAL);
    assert_int_equal(px_scram_client_verify(&st, u8(RFC_SERVER_FINAL), strlen(RFC_SERVER_FINAL)), 0);
    pgs_buf_free(&out);
}

static void test_client_first_empty_name(void **state)
{
    px_scram_client st;
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_scram_client_first(&st, "pw", "abc", &out), 0);
    assert_buf_str(&out, "n,,n=,r=abc");
    pgs_buf_clear(&out);
    /* Random nonce: 18 bytes as 24 base64 characters. */
    assert_int_equal(px_scram_client_first(&st, "pw", NULL, &out), 0);
    assert_int_equal(out.len, 8 + 24);
    assert_memory_equal(out.data, "n,,n=,r=", 8);
    pgs_buf_clear(&out);
    assert_int_equal(px_scram_client_first_user(&st, "pw", "a,b=c", "abc", &out), 0);
    assert_buf_str(&out, "n,,n=a=2Cb=3Dc,r=abc");
    pgs_buf_clear(&out);
    assert_int_equal(px_scram_client_first(&st, "pw", "a,b", &out), -1);
    assert_int_equal(px_scram_client_first(&st, "pw", "", &out), -1);
    assert_int_equal(out.len, 0);
    pgs_buf_free(&out);
}

/* Runs a whole exchange between our client and our server; returns the server's verdict. */
static int exchange(const px_scram_secret *sec, const char *password)
{
    px_scram_client cl;
    px_scram_server sv;
    pgs_buf c = PGS_BUF_INIT, s = PGS_BUF_INIT;
    px_scram_server_init(&sv, sec);
    assert_int_equal(px_scram_client_first(&cl, password, NULL, &c), 0);
    assert_int_equal(px_scram_server_first(&sv, c.data, c.len, NULL, &s), 0);
    pgs_buf_clear(&c);
    assert_int_equal(px_scram_client_final(&cl, s.data, s.len, &c), 0);
    pgs_buf_clear(&s);
    int rc = px_scram_server_final(&sv, c.data, c.len, &s);
    if (rc == 0)
        assert_int_equal(px_scram_client_verify(&cl, s.data, s.len), 0);
    else
        assert_int_equal(s.len, 0);
    pgs_buf_free(&c);
    pgs_buf_free(&s);
    return rc;
}

static void test_end_to_end(void **state)
{
    px_scram_secret sec;
    assert_int_equal(px_scram_secret_from_password("secret pw", 4096, &sec), 0);
    assert_int_equal(sec.salt_len, 16);
    assert_int_equal(sec.iterations, 4096);
    assert_int_equal(exchange(&sec, "secret pw"), 0);
    assert_int_equal(exchange(&sec, "secret pw "), -2);
    assert_int_equal(exchange(&sec, ""), -2);
}

static void test_secret_parse_known(void **state)
{
    px_scram_secret want, got;
    rfc_secret_make(&want);
    assert_int_equal(px_scram_secret_parse(rfc_secret, &got), 0);
    assert_int_equal(got.iterations, 4096);
    assert_int_equal(got.salt_len, sizeof rfc_salt);
    assert_memory_equal(got.salt, rfc_salt, sizeof rfc_salt);
    assert_memory_equal(got.stored_key, want.stored_key, PX_SCRAM_KEY_LEN);
    assert_memory_equal(got.server_key, want.server_key, PX_SCRAM_KEY_LEN);
}

static void test_secret_parse_postgres(void **state)
{
    px_scram_secret sec;
    assert_int_equal(px_scram_secret_parse(pg_secret_pencil, &sec), 0);
    assert_int_equal(sec.iterations, 4096);
    assert_int_equal(sec.salt_len, 16);
    assert_int_equal(exchange(&sec, "pencil"), 0);
    assert_int_equal(exchange(&sec, "Pencil"), -2);
}

static void test_secret_parse_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* salt not base64, or with its padding cut */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ!!$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* a key of 31 bytes */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g=="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU= ",
        "md5871c429757b7a0bf1654fad112b77bd4",
    };
    px_scram_secret sec;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (px_scram_secret_parse(bad[i], &sec) != 0)
            continue;
        fail_msg("accepted: %s", bad[i]);
    }
    assert_int_equal(px_scram_secret_parse(NULL, &sec), -1);
    uint8_t salt[PX_SCRAM_SALT_MAX + 1] = {0};
    assert_int_equal(px_scram_secret_from_password_salt("pw", 4096, salt, sizeof salt, &sec), -1);
    assert_int_equal(px_scram_secret_from_password_salt("pw", 0, salt, 16, &sec), -1);
    assert_int_equal(px_scram_secret_from_password_salt("pw", 1, salt, 0, &sec), -1);
}

static void test_wrong_password(void **state)
{
    px_scram_client cl;
    px_scram_server sv;
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_scram_client_first_user(&cl, "pencil2", "user", RFC_CNONCE, &out), 0);
    pgs_buf_clear(&out);
    assert_int_equal(px_scram_client_final(&cl, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), &out), 0);
    rfc_server_at_final(&sv);
    pgs_buf reply = PGS_BUF_INIT;
    assert_int_equal(px_scram_server_final(&sv, out.data, out.len, &reply), -2);
    assert_int_equal(reply.len, 0);
    /* And the client refuses the real server's signature for a different password. */
    assert_int_equal(px_scram_client_verify(&cl, u8(RFC_SERVER_FINAL), strlen(RFC_SERVER_FINAL)), -1);
    pgs_buf_free(&out);
    pgs_buf_free(&reply);
}

static void test_nonce_mismatch(void **state)
{
    static const char *const msgs[] = {
        /* last nonce character changed */
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        /* only the client's part */
        "c=biws,r=" RFC_CNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        px_scram_server sv;
        pgs_buf out = PGS_BUF_INIT;
        rfc_server_at_final(&sv);
        assert_int_equal(px_scram_server_final(&sv, u8(msgs[i]), strlen(msgs[i]), &out), -3);
        assert_int_equal(out.len, 0);
    }
}

static void test_server_first_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "n",
        "n,",
        "n,,",
        "p=tls-server-end-point,,n=,r=abc",
        "p,,n=,r=abc",
        "x,,n=,r=abc",
        "n,a=user,n=,r=abc",
        "n,,r=abc",
        "n,,n=",
        "n,,n=,",
        "n,,n=,r=",
        "n,,n=,r",
        "n,,n=,x=abc",
        "n,,m=ext,n=,r=abc",
        "n,,n=,r=ab\x7f",
        "n,,n=,r=ab c",
        "n,,n=,r=abc,",
        "n,,n=,r=abc,e",
        "n,,n=,r=abc,1=x",
        "n, ,n=,r=abc",
    };
    px_scram_secret sec;
    rfc_secret_make(&sec);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_scram_server sv;
        pgs_buf out = PGS_BUF_INIT;
        px_scram_server_init(&sv, &sec);
        if (px_scram_server_first(&sv, u8(bad[i]), strlen(bad[i]), "srv", &out) == -1) {
            assert_int_equal(out.len, 0);
            continue;
        }
        fail_msg("accepted: %s", bad[i]);
    }
}

static void test_server_first_edges(void **state)
{
    px_scram_secret sec;
    px_scram_server sv;
    pgs_buf out = PGS_BUF_INIT;
    rfc_secret_make(&sec);

    /* Truncation: the length, not a NUL, ends the message. */
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(RFC_CLIENT_FIRST), 9, "s", &out), -1);

    /* An embedded NUL. */
    static const char nul[] = "n,,n=,r=ab\0cd";
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(nul), sizeof nul - 1, "s", &out), -1);

    /* Too long: a 129-character nonce, and a message over 1024 bytes. */
    char big[1100];
    memcpy(big, "n,,n=,r=", 8);
    memset(big + 8, 'a', sizeof big - 8);
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(big), 8 + PX_SCRAM_NONCE_MAX + 1, "s", &out), -1);
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(big), 8 + PX_SCRAM_NONCE_MAX, "s", &out), 0);
    pgs_buf_clear(&out);
    memcpy(big + 8 + 20, ",x=", 3);
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(big), sizeof big, "s", &out), -1);

    /* Any user name is accepted and ignored, and unknown extensions are skipped. */
    static const char ext[] = "n,,n=someone,r=abc,x=1,y=";
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(ext), strlen(ext), "def", &out), 0);
    assert_buf_str(&out, "r=abcdef,s=" RFC_SALT_B64 ",i=4096");
    pgs_buf_clear(&out);

    /* A second client-first is out of turn; so is a final before the first. */
    assert_int_equal(px_scram_server_first(&sv, u8(ext), strlen(ext), "def", &out), -1);
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_final(&sv, u8(RFC_CLIENT_FINAL), strlen(RFC_CLIENT_FINAL), &out), -1);

    /* A test nonce suffix must itself be a valid nonce. */
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(ext), strlen(ext), "a,b", &out), -1);

    /* Random suffix: 24 base64 characters after the client's nonce. */
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(ext), strlen(ext), NULL, &out), 0);
    assert_int_equal(out.len, strlen("r=abc,s=" RFC_SALT_B64 ",i=4096") + 24);
    assert_int_equal(out.len, sv.server_first_len);
    pgs_buf_free(&out);
}

/* "y,,": the client could bind but thinks we cannot; its c= is then "eSws". The transcript
 * was computed with Python's hashlib/hmac. */
static void test_server_gs2_y(void **state)
{
    static const char first[] = "y,,n=,r=fyko+d2lbbFgONRv9qkxdawL";
    static const char final_y[] = "c=eSws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                                  "p=Rf8GCCtAHPgbWwLv9F4xZHw5GacFp0kQ7EJWhpAVyW4=";
    static const char final_n[] = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                                  "p=Rf8GCCtAHPgbWwLv9F4xZHw5GacFp0kQ7EJWhpAVyW4=";
    px_scram_secret sec;
    px_scram_server sv;
    pgs_buf out = PGS_BUF_INIT;
    rfc_secret_make(&sec);

    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(first), strlen(first), "3rfcNHYJY1ZVvWVs7j", &out), 0);
    pgs_buf_clear(&out);
    assert_int_equal(px_scram_server_final(&sv, u8(final_y), strlen(final_y), &out), 0);
    assert_buf_str(&out, "v=CVxpkhgeAfQ4maOh2cRLsHgmwW7c3Df0bml7JPwII8w=");
    pgs_buf_clear(&out);

    /* c= must repeat the header the client actually sent. */
    px_scram_server_init(&sv, &sec);
    assert_int_equal(px_scram_server_first(&sv, u8(first), strlen(first), "3rfcNHYJY1ZVvWVs7j", &out), 0);
    assert_int_equal(px_scram_server_final(&sv, u8(final_n), strlen(final_n), &out), -1);
    pgs_buf_free(&out);
}

static void test_server_final_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "c=biws",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE,
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=",
        "r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=eSws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" RFC_CNONCE RFC_SNONCE
        ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        /* bad base64 in the proof: a foreign character, missing padding, a short proof */
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV!=",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndQ==",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzb ZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        /* garbage after the proof */
        RFC_CLIENT_FINAL ",x=1",
        RFC_CLIENT_FINAL ",",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_scram_server sv;
        pgs_buf out = PGS_BUF_INIT;
        rfc_server_at_final(&sv);
        if (px_scram_server_final(&sv, u8(bad[i]), strlen(bad[i]), &out) == -1) {
            assert_int_equal(out.len, 0);
            continue;
        }
        fail_msg("accepted: %s", bad[i]);
    }
    /* The real message cut short by its length. */
    px_scram_server sv;
    pgs_buf out = PGS_BUF_INIT;
    rfc_server_at_final(&sv);
    assert_int_equal(px_scram_server_final(&sv, u8(RFC_CLIENT_FINAL), strlen(RFC_CLIENT_FINAL) - 1, &out),
                     -1);
    /* Extensions between r= and p= are allowed, but the proof covers them. */
    static const char ext[] =
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    rfc_server_at_final(&sv);
    assert_int_equal(px_scram_server_final(&sv, u8(ext), strlen(ext), &out), -2);
    assert_int_equal(out.len, 0);
}

/* A client that has sent the RFC client-first. */
static void rfc_client_at_final(px_scram_client *st)
{
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_scram_client_first_user(st, RFC_PASSWORD, "user", RFC_CNONCE, &out), 0);
    pgs_buf_free(&out);
}

static void test_client_final_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "r=" RFC_CNONCE RFC_SNONCE,
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64,
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=",
        /* nonce: not extending ours, not ours at all, not printable */
        "r=" RFC_CNONCE ",s=" RFC_SALT_B64 ",i=4096",
        "r=rOprNGfwEbeRWgbNEkqX" RFC_SNONCE ",s=" RFC_SALT_B64 ",i=4096",
        "r=rOprNGfwE,s=" RFC_SALT_B64 ",i=4096",
        "r=" RFC_CNONCE "a b,s=" RFC_SALT_B64 ",i=4096",
        /* iterations out of 1..10000000 or not a number */
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=0",
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=10000001",
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=99999999999",
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=-4096",
        "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=4096x",
        /* salt */
        "r=" RFC_CNONCE RFC_SNONCE ",s=,i=4096",
        "r=" RFC_CNONCE RFC_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096",
        "r=" RFC_CNONCE RFC_SNONCE ",s=W22ZaJ0SNY7s*EsUEjb6gQ==,i=4096",
        /* order, extensions, trailing bytes */
        "s=" RFC_SALT_B64 ",r=" RFC_CNONCE RFC_SNONCE ",i=4096",
        "m=x,r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=4096",
        RFC_SERVER_FIRST ",x=1",
        RFC_SERVER_FIRST ",",
        "e=other-error",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_scram_client cl;
        pgs_buf out = PGS_BUF_INIT;
        rfc_client_at_final(&cl);
        if (px_scram_client_final(&cl, u8(bad[i]), strlen(bad[i]), &out) == -1) {
            assert_int_equal(out.len, 0);
            assert_int_equal(cl.step, PX_SCRAM_STEP_FAILED);
            continue;
        }
        fail_msg("accepted: %s", bad[i]);
    }
    px_scram_client cl;
    pgs_buf out = PGS_BUF_INIT;
    rfc_client_at_final(&cl);
    assert_int_equal(px_scram_client_final(&cl, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST) - 5, &out),
                     -1);
    /* Out of turn: verify before final, final twice. */
    rfc_client_at_final(&cl);
    assert_int_equal(px_scram_client_verify(&cl, u8(RFC_SERVER_FINAL), strlen(RFC_SERVER_FINAL)), -1);
    rfc_client_at_final(&cl);
    assert_int_equal(px_scram_client_final(&cl, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), &out), 0);
    assert_int_equal(px_scram_client_final(&cl, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), &out), -1);
    pgs_buf_free(&out);
}

static void test_client_verify_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "v=",
        "v=6rrjTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", /* one character off */
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1",
        "e=invalid-proof",
        "x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_scram_client cl;
        pgs_buf out = PGS_BUF_INIT;
        rfc_client_at_final(&cl);
        assert_int_equal(px_scram_client_final(&cl, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), &out), 0);
        pgs_buf_free(&out);
        if (px_scram_client_verify(&cl, u8(bad[i]), strlen(bad[i])) == -1)
            continue;
        fail_msg("accepted: %s", bad[i]);
    }
    /* Cut short by its length. */
    px_scram_client cl;
    pgs_buf out = PGS_BUF_INIT;
    rfc_client_at_final(&cl);
    assert_int_equal(px_scram_client_final(&cl, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), &out), 0);
    assert_int_equal(px_scram_client_verify(&cl, u8(RFC_SERVER_FINAL), strlen(RFC_SERVER_FINAL) - 1), -1);
    pgs_buf_free(&out);
}

/* printf 'pwuser' | md5sum */
#define MD5_PW_USER "md5871c429757b7a0bf1654fad112b77bd4"
/* python3 -c "import hashlib; h=hashlib.md5(b'pwuser').hexdigest();
 *   print('md5'+hashlib.md5(h.encode()+bytes([1,2,3,4])).hexdigest())" */
#define MD5_PW_USER_SALT "md546eacb7412409e1444bde22e56e70744"

static void test_md5_secret(void **state)
{
    char out[36];
    px_md5_secret("pw", "user", out);
    assert_string_equal(out, MD5_PW_USER);
    /* rolpassword of "CREATE ROLE u3 PASSWORD 'pw'" with password_encryption = md5. */
    px_md5_secret("pw", "u3", out);
    assert_string_equal(out, "md5c3c5304cc70f7544d6c2b6510f8507e0");
}

static void test_md5_response(void **state)
{
    static const uint8_t salt[4] = {1, 2, 3, 4};
    char out[36];
    px_md5_response("pw", "user", salt, out);
    assert_string_equal(out, MD5_PW_USER_SALT);
    /* A stored secret is used as is; the user name no longer matters. */
    px_md5_response(MD5_PW_USER, "someone else", salt, out);
    assert_string_equal(out, MD5_PW_USER_SALT);
    /* Not a secret by PostgreSQL's rules (upper-case hex, wrong length): hashed as a password. */
    px_md5_response("md5871C429757B7A0BF1654FAD112B77BD4", "user", salt, out);
    assert_string_not_equal(out, MD5_PW_USER_SALT);
    px_md5_response(MD5_PW_USER "0", "user", salt, out);
    assert_string_not_equal(out, MD5_PW_USER_SALT);
}

static void test_md5_verify(void **state)
{
    static const uint8_t salt[4] = {1, 2, 3, 4};
    static const uint8_t salt2[4] = {1, 2, 3, 5};
    assert_int_equal(px_md5_verify("pw", "user", salt, MD5_PW_USER_SALT), 0);
    assert_int_equal(px_md5_verify(MD5_PW_USER, "user", salt, MD5_PW_USER_SALT), 0);
    assert_int_equal(px_md5_verify("pw", "user", salt2, MD5_PW_USER_SALT), -1);
    assert_int_equal(px_md5_verify("pw2", "user", salt, MD5_PW_USER_SALT), -1);
    assert_int_equal(px_md5_verify("pw", "user2", salt, MD5_PW_USER_SALT), -1);
    assert_int_equal(px_md5_verify("pw", "user", salt, MD5_PW_USER_SALT "0"), -1);
    assert_int_equal(px_md5_verify("pw", "user", salt, "md546eacb7412409e1444bde22e56e7074"), -1);
    assert_int_equal(px_md5_verify("pw", "user", salt, ""), -1);
    assert_int_equal(px_md5_verify("pw", "user", salt, NULL), -1);
    /* The client may send the stored secret itself; that is not the response. */
    assert_int_equal(px_md5_verify("pw", "user", salt, MD5_PW_USER), -1);
    /* No md5 response can be derived from a SCRAM secret. */
    assert_int_equal(px_md5_verify(rfc_secret, "user", salt, MD5_PW_USER_SALT), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_server),
        cmocka_unit_test(test_rfc7677_client),
        cmocka_unit_test(test_client_first_empty_name),
        cmocka_unit_test(test_end_to_end),
        cmocka_unit_test(test_secret_parse_known),
        cmocka_unit_test(test_secret_parse_postgres),
        cmocka_unit_test(test_secret_parse_malformed),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_nonce_mismatch),
        cmocka_unit_test(test_server_first_malformed),
        cmocka_unit_test(test_server_first_edges),
        cmocka_unit_test(test_server_gs2_y),
        cmocka_unit_test(test_server_final_malformed),
        cmocka_unit_test(test_client_final_malformed),
        cmocka_unit_test(test_client_verify_malformed),
        cmocka_unit_test(test_md5_secret),
        cmocka_unit_test(test_md5_response),
        cmocka_unit_test(test_md5_verify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
