-- Stream failure reasons written before redaction (vigil/redact.py) may quote a camera URL
-- with its password (rtsp://user:pass@host/...). Mask the password part in the rows kept
-- so far, the same way the projector now does for every new row; the pattern matches
-- vigil.redact's URL user-info rule.
UPDATE cameras
   SET stream_reason = regexp_replace(stream_reason,
         '([A-Za-z][A-Za-z0-9+.-]*://[^:/[:space:]@''"]*):[^/[:space:]''"]*@', '\1:***@', 'g')
 WHERE stream_reason ~ '://[^/[:space:]]*:[^/[:space:]]*@';

UPDATE health_events
   SET reason = regexp_replace(reason,
         '([A-Za-z][A-Za-z0-9+.-]*://[^:/[:space:]@''"]*):[^/[:space:]''"]*@', '\1:***@', 'g'),
       payload = regexp_replace(payload::text,
         '([A-Za-z][A-Za-z0-9+.-]*://[^:/[:space:]@''"]*):[^/[:space:]''"]*@', '\1:***@',
         'g')::jsonb
 WHERE reason ~ '://[^/[:space:]]*:[^/[:space:]]*@'
    OR payload::text ~ '://[^/[:space:]]*:[^/[:space:]]*@';
