// pgJDBC against `imageql serve`, as DBeaver, DataGrip, Metabase and Tableau use it: every
// DatabaseMetaData call the driver implements, typed reads of each column, prepared statements
// with typed, text and array parameters, and an error's SQLSTATE.
//
// Run as a single-file program: java -cp postgresql.jar JdbcMetadata.java URL PASSWORD
// Prints one line per check, tab-separated:
//   call   NAME  ok ROWS COLUMN,COLUMN,…   or   call NAME  failed MESSAGE
//   value  NAME  TEXT

import java.sql.*;
import java.util.*;

public class JdbcMetadata {
    interface Call {
        ResultSet run(DatabaseMetaData m) throws SQLException;
    }

    static void print(String... fields) {
        System.out.println(String.join("\t", fields).replace("\n", " "));
    }

    static void call(DatabaseMetaData m, String name, Call call) {
        try (ResultSet r = call.run(m)) {
            ResultSetMetaData columns = r.getMetaData();
            List<String> labels = new ArrayList<>();
            for (int i = 1; i <= columns.getColumnCount(); i++) labels.add(columns.getColumnLabel(i));
            int rows = 0;
            while (r.next()) {
                rows++;
                for (int i = 1; i <= columns.getColumnCount(); i++) r.getObject(i);
            }
            print("call", name, "ok", Integer.toString(rows), String.join(",", labels));
        } catch (SQLException e) {
            print("call", name, "failed", e.getSQLState() + " " + e.getMessage());
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0].replaceFirst("^postgresql://[^@]*@", "jdbc:postgresql://").replaceFirst("^postgresql://", "jdbc:postgresql://");
        Properties properties = new Properties();
        properties.setProperty("user", "reporter");
        properties.setProperty("password", args[1]);
        try (Connection c = DriverManager.getConnection(url, properties)) {
            DatabaseMetaData m = c.getMetaData();
            print("value", "product", m.getDatabaseProductName() + " " + m.getDatabaseProductVersion());
            call(m, "getCatalogs", DatabaseMetaData::getCatalogs);
            call(m, "getSchemas", DatabaseMetaData::getSchemas);
            call(m, "getTableTypes", DatabaseMetaData::getTableTypes);
            call(m, "getTables", d -> d.getTables(null, "images", "%", null));
            call(m, "getColumns", d -> d.getColumns(null, "images", "images", "%"));
            call(m, "getPrimaryKeys", d -> d.getPrimaryKeys(null, "images", "images"));
            call(m, "getIndexInfo", d -> d.getIndexInfo(null, "images", "images", false, true));
            call(m, "getImportedKeys", d -> d.getImportedKeys(null, "images", "images"));
            call(m, "getExportedKeys", d -> d.getExportedKeys(null, "images", "images"));
            call(m, "getCrossReference", d -> d.getCrossReference(null, "images", "images", null, "linode", "disks"));
            call(m, "getTypeInfo", DatabaseMetaData::getTypeInfo);
            call(m, "getFunctions", d -> d.getFunctions(null, "images", "%"));
            call(m, "getFunctionColumns", d -> d.getFunctionColumns(null, "images", "%", "%"));
            call(m, "getProcedures", d -> d.getProcedures(null, "images", "%"));
            call(m, "getProcedureColumns", d -> d.getProcedureColumns(null, "images", "%", "%"));
            call(m, "getUDTs", d -> d.getUDTs(null, "images", "%", null));
            call(m, "getVersionColumns", d -> d.getVersionColumns(null, "images", "images"));
            call(m, "getBestRowIdentifier", d -> d.getBestRowIdentifier(null, "images", "images", DatabaseMetaData.bestRowSession, true));
            call(m, "getColumnPrivileges", d -> d.getColumnPrivileges(null, "images", "images", "%"));
            call(m, "getTablePrivileges", d -> d.getTablePrivileges(null, "images", "%"));
            call(m, "getClientInfoProperties", DatabaseMetaData::getClientInfoProperties);

            // The catalog's type of each column, then the wire's: a tool shows the one and reads the other.
            try (ResultSet r = m.getColumns(null, "images", "images", "%")) {
                List<String> described = new ArrayList<>();
                while (r.next()) described.add(r.getString("COLUMN_NAME") + ":" + r.getString("TYPE_NAME") + ":" + r.getInt("DATA_TYPE"));
                print("value", "catalog_types", String.join(",", described));
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT * FROM images.images WHERE NOT is_public ORDER BY id LIMIT 1")) {
                ResultSetMetaData columns = r.getMetaData();
                List<String> sent = new ArrayList<>();
                for (int i = 1; i <= columns.getColumnCount(); i++) sent.add(columns.getColumnName(i) + ":" + columns.getColumnTypeName(i) + ":" + columns.getColumnType(i));
                print("value", "wire_types", String.join(",", sent));
                r.next();
                List<String> classes = new ArrayList<>();
                for (int i = 1; i <= columns.getColumnCount(); i++) {
                    Object value = r.getObject(i);
                    classes.add(columns.getColumnName(i) + ":" + (value == null ? "null" : value.getClass().getSimpleName()));
                }
                print("value", "objects", String.join(",", classes));
                Array tags = r.getArray("tags");
                print("value", "tags", String.join(",", (String[]) tags.getArray()));
            } catch (SQLException e) {
                print("value", "objects", "failed " + e.getSQLState() + " " + e.getMessage());
            }

            try (PreparedStatement p = c.prepareStatement("SELECT count(*) FROM images.images WHERE size > ?")) {
                p.setLong(1, 2000);
                try (ResultSet r = p.executeQuery()) {
                    r.next();
                    print("value", "count_above", Long.toString(r.getLong(1)));
                }
            }
            try (PreparedStatement p = c.prepareStatement("SELECT id FROM images.images WHERE id = ANY(?) ORDER BY id")) {
                p.setArray(1, c.createArrayOf("text", new String[] {args[2], args[3]}));
                List<String> ids = new ArrayList<>();
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) ids.add(r.getString(1));
                }
                print("value", "any_ids", String.join(",", ids));
            }
            try (PreparedStatement p = c.prepareStatement("SELECT label FROM images.images WHERE id = ?")) {
                p.setString(1, args[2]);
                try (ResultSet r = p.executeQuery()) {
                    r.next();
                    print("value", "label", r.getString(1));
                }
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELEC 1");
            } catch (SQLException e) {
                print("value", "syntax_error", e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 1")) {
                r.next();
                print("value", "after_error", r.getObject(1).getClass().getSimpleName() + " " + r.getInt(1));
            }
        }
    }
}
