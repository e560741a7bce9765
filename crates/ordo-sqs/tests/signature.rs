//! ordo's Signature Version 4 against botocore's, the signer of the AWS CLI and boto3,
//! over the requests ordo sends to SQS: the same request, keys and moment must give the
//! same `Authorization` header byte for byte. botocore comes with moto (scripts/test.sh
//! installs `moto[server]`); without python3 and botocore this test fails, it does not
//! skip.

use std::io::Write;
use std::process::{Command, Stdio};

use ordo_sqs::sigv4::{amz_date, authorization, Credentials, Request};
use serde_json::json;

/// Signs one request with botocore at `unix_s`; its `Authorization` header.
const BOTOCORE: &str = r#"
import datetime, json, sys
import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
case = json.load(sys.stdin)
at = datetime.datetime.fromtimestamp(case["unix_s"], datetime.timezone.utc).replace(tzinfo=None)
botocore.auth.get_current_datetime = lambda *args, **kwargs: at
request = AWSRequest(method="POST", url=case["url"], headers=case["headers"], data=case["body"].encode())
keys = Credentials(case["access"], case["secret"], case["token"])
SigV4Auth(keys, "sqs", case["region"]).add_auth(request)
print(request.headers["Authorization"])
"#;

fn botocore(case: &serde_json::Value) -> String {
    let mut child = Command::new("python3")
        .args(["-c", BOTOCORE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs botocore with moto[server])");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "botocore failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn sqs_requests_are_signed_as_botocore_signs_them() {
    let cases = [
        // A receive through a local endpoint, long-term keys.
        (
            "http://127.0.0.1:4566/",
            "127.0.0.1:4566",
            "ReceiveMessage",
            r#"{"QueueUrl":"http://127.0.0.1:4566/000000000000/orders.fifo","MaxNumberOfMessages":10,"WaitTimeSeconds":2}"#,
            None,
            "us-east-1",
            1_796_000_000_u64,
        ),
        // A batch send to the real endpoint with temporary keys, other region, non-ASCII.
        (
            "https://sqs.eu-west-1.amazonaws.com/",
            "sqs.eu-west-1.amazonaws.com",
            "SendMessageBatch",
            r#"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/1/q.fifo","Entries":[{"Id":"0","MessageBody":"{\"data\":\"Grüße  two  spaces\"}","MessageGroupId":"customer-42"}]}"#,
            Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+token="),
            "eu-west-1",
            1_798_761_599,
        ),
    ];
    for (url, host, action, body, token, region, unix_s) in cases {
        let keys = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(String::from),
        };
        let date = amz_date(unix_s);
        let target = format!("AmazonSQS.{action}");
        let mut headers = vec![
            ("content-type", "application/x-amz-json-1.0"),
            ("host", host),
            ("x-amz-date", date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = token {
            headers.push(("x-amz-security-token", token));
        }
        let ours = authorization(
            &Request {
                method: "POST",
                path: "/",
                query: &[],
                headers: &headers,
                payload: body.as_bytes(),
            },
            &keys,
            region,
            "sqs",
            &date,
        );
        let theirs = botocore(&json!({
            "url": url,
            "headers": {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target},
            "body": body,
            "access": keys.access_key_id,
            "secret": keys.secret_access_key,
            "token": token,
            "region": region,
            "unix_s": unix_s,
        }));
        assert_eq!(ours, theirs, "{action} to {url}");
    }
}
